// DataFetch: download a known public data set into a cache directory and verify its SHA-256.
//
// The body is streamed (never held in memory) into a temporary file beside its final path, hashed as
// it arrives and counted against a size cap (the data set's known size, and --max-bytes), then
// fsynced, closed and renamed only when the digest matches (AtomicFile.Writer, each result checked),
// so an interrupted, oversized or corrupted download never leaves a file that looks valid.

import Foundation
import PalmTensor
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A public data set palm knows how to fetch.
public struct KnownDataset: Sendable {
  public let name: String
  public let url: String
  public let sha256: String
  public let bytes: Int
  public let fileName: String

  /// Karpathy's char-rnn Tiny Shakespeare (1,115,394 bytes).
  public static let tinyShakespeare = KnownDataset(
    name: "tinyshakespeare",
    url: "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    bytes: 1_115_394, fileName: "tinyshakespeare.txt")

  public static let all: [KnownDataset] = [tinyShakespeare]

  public static func named(_ name: String) -> KnownDataset? { all.first { $0.name == name } }
}

public enum DataFetchError: Error, CustomStringConvertible {
  case unknownDataset(String)
  case http(url: String, status: Int)
  case transport(url: String, message: String)
  case checksum(url: String, expected: String, got: String, bytes: Int)
  case io(path: String, message: String)
  /// The body (or its announced length) is larger than `limit` bytes: the data set's own size
  /// (`known`), or the --max-bytes cap.
  case tooLarge(url: String, limit: Int, known: Bool)
  /// The data set is larger than the cap, so the download is not even started.
  case capBelowDataset(name: String, bytes: Int, cap: Int)

  public var description: String {
    switch self {
    case .unknownDataset(let n):
      return "unknown data set '\(n)' (known: \(KnownDataset.all.map(\.name).joined(separator: ", ")))"
    case .http(let u, let s): return "download of \(u) failed: HTTP status \(s)"
    case .transport(let u, let m): return "download of \(u) failed: \(m)"
    case .checksum(let u, let e, let g, let b):
      return "download of \(u) is corrupt: SHA-256 \(g) (\(b) bytes), expected \(e); nothing was saved"
    case .io(let p, let m): return "cannot write \(p): \(m)"
    case .tooLarge(let u, let limit, true):
      return "download of \(u) stopped: it is larger than the \(limit) bytes of the data set (a wrong --url?); nothing was saved"
    case .tooLarge(let u, let limit, false):
      return "download of \(u) stopped: it is larger than --max-bytes \(limit); raise --max-bytes if it should be; nothing was saved"
    case .capBelowDataset(let n, let b, let cap):
      return "data set \(n) is \(b) bytes, more than --max-bytes \(cap): raise --max-bytes to at least \(b)"
    }
  }
}

public enum DataFetch {
  /// The cache directory: $PALM_CACHE, else $XDG_CACHE_HOME/palm, else ~/.cache/palm.
  public static var defaultCacheDirectory: URL {
    let env = ProcessInfo.processInfo.environment
    if let c = env["PALM_CACHE"], !c.isEmpty { return URL(fileURLWithPath: c) }
    if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return URL(fileURLWithPath: x).appendingPathComponent("palm") }
    return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/palm")
  }

  /// The default cap on a download's size (--max-bytes): 1 GiB.
  public static let defaultMaxBytes = 1 << 30

  /// Downloads `dataset` (from `url` if given, e.g. a mirror) into `directory` unless a verified
  /// copy is already there. Returns the path of the verified file.
  /// - Parameters:
  ///   - maxBytes: the largest body accepted; the data set's own size caps it too.
  ///   - temporaryFile: told the temporary file's path while it exists (then nil), so a signal
  ///     handler can remove it.
  /// - Throws: `DataFetchError`; on every error nothing is left in `directory` but what was there
  ///   (and the directory itself).
  public static func fetch(_ dataset: KnownDataset, into directory: URL, from url: String? = nil,
                           timeout: TimeInterval = 60, maxBytes: Int = defaultMaxBytes,
                           temporaryFile: @escaping @Sendable (String?) -> Void = { _ in }) async throws -> URL {
    let target = directory.appendingPathComponent(dataset.fileName)
    if verified(target.path, dataset) { return target }
    guard dataset.bytes <= maxBytes else {
      throw DataFetchError.capBelowDataset(name: dataset.name, bytes: dataset.bytes, cap: maxBytes)
    }
    let source = url ?? dataset.url
    guard let remote = URL(string: source), remote.scheme != nil else {
      throw DataFetchError.transport(url: source, message: "not a URL")
    }
    // A cache directory made here goes again when the fetch fails (if it is still empty).
    let made = !FileManager.default.fileExists(atPath: directory.path)
    do {
      try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    } catch {
      throw DataFetchError.io(path: directory.path, message: "\(error.localizedDescription)")
    }
    var committed = false
    defer { if made && !committed { rmdir(directory.path) } }
    AtomicFile.removeStaleTemporaries(of: target.path)
    let writer: AtomicFile.Writer
    do { writer = try AtomicFile.Writer(path: target.path) } catch {
      throw DataFetchError.io(path: target.path, message: "\(error)")
    }
    temporaryFile(writer.temporaryPath)
    defer { temporaryFile(nil) }
    var request = URLRequest(url: remote)
    request.timeoutInterval = timeout
    let limit = min(maxBytes, dataset.bytes)
    let body = StreamingBody(writer: writer, limit: limit, limitIsDataset: limit == dataset.bytes, url: source)
    let digest: String
    do {
      digest = try await body.run(request)
    } catch {
      writer.abort()
      throw error
    }
    guard digest == dataset.sha256 else {
      writer.abort()
      throw DataFetchError.checksum(url: source, expected: dataset.sha256, got: digest, bytes: writer.count)
    }
    do { try writer.commit() } catch {
      throw DataFetchError.io(path: target.path, message: "\(error)")
    }
    committed = true
    return target
  }

  /// Whether `path` holds the data set: its size, then its SHA-256 read in 1 MiB pieces.
  static func verified(_ path: String, _ dataset: KnownDataset) -> Bool {
    guard let f = try? DataFile(path: path), f.count == dataset.bytes else { return false }
    var h = SHA256(), buffer = [UInt8](repeating: 0, count: 1 << 20), at = 0
    while at < f.count {
      let n = min(buffer.count, f.count - at)
      guard (try? buffer.withUnsafeMutableBytes { try f.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: at) }) != nil else { return false }
      h.update(buffer[0..<n])
      at += n
    }
    return SHA256.hex(h.finalize()) == dataset.sha256
  }
}

/// One GET through a private ephemeral session (no shared cookies or cache), its body streamed to
/// `writer` and hashed; stopped as soon as it passes `limit` bytes (or announces more).
private final class StreamingBody: NSObject, URLSessionDataDelegate, @unchecked Sendable {
  let writer: AtomicFile.Writer
  let limit: Int
  let limitIsDataset: Bool
  let url: String
  // Touched only on the session's serial delegate queue.
  private var hasher = SHA256()
  private var failure: DataFetchError?
  private var continuation: CheckedContinuation<String, any Error>?

  init(writer: AtomicFile.Writer, limit: Int, limitIsDataset: Bool, url: String) {
    self.writer = writer
    self.limit = limit
    self.limitIsDataset = limitIsDataset
    self.url = url
  }

  /// The body's SHA-256 (hex) once it is all written.
  func run(_ request: URLRequest) async throws -> String {
    let session = URLSession(configuration: .ephemeral, delegate: self, delegateQueue: nil)
    defer { session.finishTasksAndInvalidate() }
    return try await withCheckedThrowingContinuation { c in
      continuation = c
      session.dataTask(with: request).resume()
    }
  }

  func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                  completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void) {
    if let http = response as? HTTPURLResponse, http.statusCode != 200 {
      failure = .http(url: url, status: http.statusCode)
    } else if response.expectedContentLength > Int64(limit) {
      failure = .tooLarge(url: url, limit: limit, known: limitIsDataset)
    }
    completionHandler(failure == nil ? .allow : .cancel)
  }

  func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
    guard failure == nil else { return }
    if writer.count + data.count > limit {
      failure = .tooLarge(url: url, limit: limit, known: limitIsDataset)
      dataTask.cancel()
      return
    }
    do {
      try data.withUnsafeBytes { bytes in
        hasher.update(bytes)
        try writer.append(bytes)
      }
    } catch {
      failure = .io(path: writer.path, message: "\(error)")
      dataTask.cancel()
    }
  }

  func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
    guard let c = continuation else { return }
    continuation = nil
    if let failure { c.resume(throwing: failure); return }
    if let error { c.resume(throwing: DataFetchError.transport(url: url, message: error.localizedDescription)); return }
    c.resume(returning: SHA256.hex(hasher.finalize()))
  }
}
