import Foundation
import Testing
import _PalmTestSupport
@testable import PalmTrain

/// A python3 http.server on 127.0.0.1 serving one directory, stopped on deinit.
final class LoopbackServer {
  let process = Process()
  let port: Int

  init(serving directory: String) throws {
    // Pick a free port by binding 0 in Python, then serve on it.
    let script = """
      import http.server, socketserver, sys, functools
      h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
      class S(socketserver.TCPServer): allow_reuse_address = True
      with S(("127.0.0.1", 0), h) as s:
          print(s.server_address[1], flush=True)
          s.serve_forever()
      """
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script, directory]
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
}
