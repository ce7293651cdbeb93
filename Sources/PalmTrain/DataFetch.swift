// DataFetch: download a known public data set into a cache directory and verify its SHA-256.
//
// The file is downloaded to a temporary name beside its final path, hashed, and renamed only when
// the digest matches, so an interrupted or corrupted download never leaves a file that looks valid.

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

  public var description: String {
    switch self {
    case .unknownDataset(let n):
      return "unknown data set '\(n)' (known: \(KnownDataset.all.map(\.name).joined(separator: ", ")))"
    case .http(let u, let s): return "download of \(u) failed: HTTP status \(s)"
    case .transport(let u, let m): return "download of \(u) failed: \(m)"
    case .checksum(let u, let e, let g, let b):
      return "download of \(u) is corrupt: SHA-256 \(g) (\(b) bytes), expected \(e); nothing was saved"
    case .io(let p, let m): return "cannot write \(p): \(m)"
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

  /// Downloads `dataset` (from `url` if given, e.g. a mirror) into `directory` unless a verified
  /// copy is already there. Returns the path of the verified file.
  public static func fetch(_ dataset: KnownDataset, into directory: URL, from url: String? = nil,
                           timeout: TimeInterval = 60) async throws -> URL {
    let fm = FileManager.default
    let target = directory.appendingPathComponent(dataset.fileName)
    if let existing = try? Data(contentsOf: target), SHA256.hex(of: existing) == dataset.sha256 {
      return target
    }
    do {
      try fm.createDirectory(at: directory, withIntermediateDirectories: true)
    } catch {
      throw DataFetchError.io(path: directory.path, message: "\(error.localizedDescription)")
    }
    let source = url ?? dataset.url
    guard let remote = URL(string: source) else { throw DataFetchError.transport(url: source, message: "not a URL") }
    var request = URLRequest(url: remote)
    request.timeoutInterval = timeout
    let data: Data
    let response: URLResponse
    do {
      (data, response) = try await download(request)
    } catch {
      throw DataFetchError.transport(url: source, message: "\(error.localizedDescription)")
    }
    if let http = response as? HTTPURLResponse, http.statusCode != 200 {
      throw DataFetchError.http(url: source, status: http.statusCode)
    }
    let digest = SHA256.hex(of: data)
    guard digest == dataset.sha256 else {
      throw DataFetchError.checksum(url: source, expected: dataset.sha256, got: digest, bytes: data.count)
    }
    // Atomic and durable: temp file in the same directory, fsync (its result checked), rename,
    // fsync of the directory (AtomicFile); a failure removes the temp file.
    do {
      try AtomicFile.write(to: target.path, bytes: Array(data))
    } catch {
      throw DataFetchError.io(path: target.path, message: "\(error)")
    }
    return target
  }

  /// One GET through a private ephemeral session (no shared cookies or cache).
  private static func download(_ request: URLRequest) async throws -> (Data, URLResponse) {
    let session = URLSession(configuration: .ephemeral)
    defer { session.finishTasksAndInvalidate() }
    return try await withCheckedThrowingContinuation { continuation in
      session.dataTask(with: request) { data, response, error in
        if let error { continuation.resume(throwing: error); return }
        guard let data, let response else {
          continuation.resume(throwing: URLError(.badServerResponse)); return
        }
        continuation.resume(returning: (data, response))
      }.resume()
    }
  }
}
