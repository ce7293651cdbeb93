import Foundation
import PalmTensor
import Testing
import _PalmTestSupport
@testable import PalmTrain

/// A python3 http.server on 127.0.0.1 serving one directory, stopped on deinit.
final class LoopbackServer {
  let process = Process()
  let port: Int

  /// `announceLength: false` sends bodies without Content-Length (ended by closing the connection),
  /// so that a size cap must stop the body while it streams.
  init(serving directory: String, announceLength: Bool = true) throws {
    // Pick a free port by binding 0 in Python, then serve on it.
    let script = """
      import http.server, socketserver, sys, functools, os
      class Bare(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              p = os.path.join(sys.argv[1], self.path.lstrip("/"))
              if not os.path.isfile(p): self.send_error(404); return
              self.send_response(200); self.end_headers()
              with open(p, "rb") as f: self.wfile.write(f.read())
          def log_message(self, *a): pass
      h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1]) if sys.argv[2] == "1" else Bare
      class S(socketserver.TCPServer): allow_reuse_address = True
      with S(("127.0.0.1", 0), h) as s:
          print(s.server_address[1], flush=True)
          s.serve_forever()
      """
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script, directory, announceLength ? "1" : "0"]
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
    guard let p = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
      process.terminate()
      throw CocoaError(.fileReadUnknown)
    }
    port = p
  }

  // Foundation's waitUntilExit was seen to hang inside the test runner: kill and reap directly.
  deinit {
    let pid = process.processIdentifier
    kill(pid, SIGKILL)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
  }
}

@Suite struct DataFetchTests {
  @Test func sha256KnownVectors() {
    #expect(SHA256.hex(of: [UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(SHA256.hex(of: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    // 56 bytes: the padding needs a second block.
    #expect(SHA256.hex(of: Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    var h = SHA256()
    for _ in 0..<1000 { h.update(Array(repeating: UInt8(ascii: "a"), count: 1000)) }
    #expect(SHA256.hex(h.finalize())
            == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }

  /// The real corpus when it is there (../shared/data or PALM_TEST_CORPUS), else a synthetic file
  /// with its own size and SHA-256, so the download, verification and atomic rename are exercised
  /// on every machine.
  @Test func fetchesOverLoopbackHTTPAndVerifies() async throws {
    let dir: String, dataset: KnownDataset
    if let corpus = TestData.tinyShakespeare {
      dir = URL(fileURLWithPath: corpus).deletingLastPathComponent().path
      dataset = .tinyShakespeare
    } else {
      let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("palm-serve-\(UUID())")
      try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
      let bytes = (0..<300_001).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
      try Data(bytes).write(to: tmp.appendingPathComponent("tinyshakespeare.txt"))
      dir = tmp.path
      dataset = KnownDataset(name: "synthetic", url: "http://127.0.0.1:1/none", sha256: SHA256.hex(of: bytes),
                             bytes: bytes.count, fileName: "tinyshakespeare.txt")
    }
    defer { if dataset.name == "synthetic" { try? FileManager.default.removeItem(atPath: dir) } }
    let server = try LoopbackServer(serving: dir)
    let cache = FileManager.default.temporaryDirectory.appendingPathComponent("palm-fetch-\(UUID())")
    defer { try? FileManager.default.removeItem(at: cache) }
    let url = "http://127.0.0.1:\(server.port)/tinyshakespeare.txt"
    let path = try await DataFetch.fetch(dataset, into: cache, from: url)
    let data = try Data(contentsOf: path)
    #expect(data.count == dataset.bytes)
    // No temporary file is left behind.
    let names = try FileManager.default.contentsOfDirectory(atPath: cache.path)
    #expect(names == ["tinyshakespeare.txt"])
    // A second fetch uses the verified cache (the server could be gone).
    _ = server
    let again = try await DataFetch.fetch(dataset, into: cache, from: "http://127.0.0.1:1/none")
    #expect(again == path)
  }

  @Test func corruptDownloadIsRejectedAndNothingSaved() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-serve-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    try Data("not shakespeare".utf8).write(to: dir.appendingPathComponent("tinyshakespeare.txt"))
    let server = try LoopbackServer(serving: dir.path)
    let cache = dir.appendingPathComponent("cache")
    await #expect(throws: DataFetchError.self) {
      _ = try await DataFetch.fetch(.tinyShakespeare, into: cache,
                                    from: "http://127.0.0.1:\(server.port)/tinyshakespeare.txt")
    }
    #expect(!FileManager.default.fileExists(atPath: cache.appendingPathComponent("tinyshakespeare.txt").path))
    await #expect(throws: DataFetchError.self) {
      _ = try await DataFetch.fetch(.tinyShakespeare, into: cache,
                                    from: "http://127.0.0.1:\(server.port)/missing.txt")
    }
  }

  /// Issue 13 item 14: the body was held in memory whole, with no cap. Now it streams to a
  /// temporary file and stops at the cap: with an announced length at once, without one (a
  /// close-delimited body) as soon as it passes the cap. Nothing is left in the cache either way.
  @Test("A body over the size cap stops the download: one error, nothing saved, no temporary file",
        arguments: [true, false])
  func sizeCap(announceLength: Bool) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-serve-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 40_503 >> 5) }
    try Data(bytes).write(to: dir.appendingPathComponent("big.txt"))
    let server = try LoopbackServer(serving: dir.path, announceLength: announceLength)
    let cache = dir.appendingPathComponent("cache")
    let url = "http://127.0.0.1:\(server.port)/big.txt"
    // The data set's own size is the cap (the mirror serves something else).
    let small = KnownDataset(name: "small", url: url, sha256: SHA256.hex(of: bytes.prefix(1000)), bytes: 1000, fileName: "small.txt")
    await #expect { _ = try await DataFetch.fetch(small, into: cache, from: url) } throws: { e in
      guard case .tooLarge(_, 1000, true) = e as? DataFetchError else { return false }
      return "\(e)".contains("larger than the 1000 bytes of the data set") && "\(e)".contains("nothing was saved")
    }
    // --max-bytes below the data set's size: refused before any download.
    let whole = KnownDataset(name: "whole", url: url, sha256: SHA256.hex(of: bytes), bytes: bytes.count, fileName: "whole.txt")
    await #expect { _ = try await DataFetch.fetch(whole, into: cache, from: url, maxBytes: 65_536) } throws: { e in
      guard case .capBelowDataset(_, 3_000_000, 65_536) = e as? DataFetchError else { return false }
      return "\(e)".contains("raise --max-bytes to at least 3000000")
    }
    #expect(!FileManager.default.fileExists(atPath: cache.path), "a failed fetch leaves no cache directory it made")
    // Under the cap: streamed, verified, renamed; the temporary file was announced, then withdrawn.
    let seen = TemporaryNames()
    let path = try await DataFetch.fetch(whole, into: cache, from: url) { seen.add($0) }
    #expect(try Data(contentsOf: path) == Data(bytes))
    #expect(try FileManager.default.contentsOfDirectory(atPath: cache.path) == ["whole.txt"])
    #expect(seen.names.count == 2 && seen.names[0]?.contains(".whole.txt.tmp-") == true && seen.names[1] == nil)
    _ = server
  }

  @Test("A temporary file a killed fetch left behind is removed by the next fetch; a live writer's is kept")
  func staleTemporaryRemoved() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-stale-\(UUID())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let dead = "\(dir)/.f.txt.tmp-\(Int32.max - 1)-7", live = "\(dir)/.f.txt.tmp-\(getpid())-9", other = "\(dir)/.g.txt.tmp-\(Int32.max - 1)-7"
    for p in [dead, live, other] { #expect(FileManager.default.createFile(atPath: p, contents: Data("x".utf8))) }
    AtomicFile.removeStaleTemporaries(of: "\(dir)/f.txt")
    #expect(!FileManager.default.fileExists(atPath: dead))
    #expect(FileManager.default.fileExists(atPath: live) && FileManager.default.fileExists(atPath: other))
  }
}

/// The temporary-file announcements of a fetch, in order.
private final class TemporaryNames: @unchecked Sendable {
  private let lock = NSLock()
  private(set) var names: [String?] = []
  func add(_ n: String?) { lock.lock(); names.append(n); lock.unlock() }
}
