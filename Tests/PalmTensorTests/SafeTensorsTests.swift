// SafeTensors: round trip, interoperability with the Python reference package, hand-made bad
// headers, the expected-table check, and a seeded fuzz (truncations, byte and bit flips).
import Foundation
import Testing
import _PalmTestSupport
@testable import PalmTensor

private func temporaryDirectory(_ tag: String) throws -> String {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-\(tag)-\(UUID().uuidString)").path
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  return dir
}

/// A file image from a header string and a data section (header padded with spaces to 8 bytes).
private func image(header: String, data: [UInt8], pad: Bool = true) -> [UInt8] {
  var h = Array(header.utf8)
  if pad { while (8 + h.count) % 8 != 0 { h.append(0x20) } }
  var n = UInt64(h.count)
  var prefix: [UInt8] = []
  for _ in 0..<8 { prefix.append(UInt8(truncatingIfNeeded: n)); n >>= 8 }
  return prefix + h + data
}

private func sampleTensors() -> [(name: String, tensor: Tensor)] {
  [
    ("layers.0.w_in", Tensor(shape: [3, 5], values: (0..<15).map { Float($0) * 0.37 - 2.5 })),
    ("embed", Tensor(shape: [4, 2], values: [1e-30, -0, 3.4e38, -1.5, 0.1, 7, 8, 9])),
    ("scalar", Tensor(shape: [], values: [42.5])),
    ("empty", Tensor(shape: [0, 3])),
    ("naïve \"quoted\" name", Tensor(shape: [1], values: [-1])),
  ]
}

@Suite("SafeTensors")
struct SafeTensorsTests {
  @Test("Round trip: names, shapes, values, metadata; deterministic bytes; 8-byte aligned data")
  func roundTrip() throws {
    let dir = try temporaryDirectory("st")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let tensors = sampleTensors()
    let meta = ["format": "pt", "config": "{\"d\": 4}"]
    try SafeTensors.write(tensors, metadata: meta, to: "\(dir)/a.safetensors")
    try SafeTensors.write(tensors.reversed(), metadata: meta, to: "\(dir)/b.safetensors")
    let a = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/a.safetensors"))
    let b = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/b.safetensors"))
    #expect(a == b, "input order must not change the bytes")
    let headerLength = a.prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
    #expect((8 + headerLength) % 8 == 0)

    let file = try SafeTensorsFile(path: "\(dir)/a.safetensors")
    #expect(file.metadata == meta)
    #expect(file.names.sorted() == tensors.map(\.name).sorted())
    for (name, t) in tensors {
      let back = try file.tensor(name)
      #expect(back.shape == t.shape, "\(name)")
      #expect(back.array.map(\.bitPattern) == t.array.map(\.bitPattern), "\(name)")
    }
    // Leaves no temporary files behind.
    let left = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
    #expect(left == ["a.safetensors", "b.safetensors"])
  }

  @Test("Readable by the Python safetensors package (Tests/Scripts/safetensors_check.py)",
        .enabled(if: TestData.pythonHasSafetensors, "python3 with numpy and safetensors (bash .ci/setup installs them)"))
  func pythonReadsOurFiles() throws {
    let script = TestData.repositoryRoot.appendingPathComponent("Tests/Scripts/safetensors_check.py").path
    let dir = try temporaryDirectory("stpy")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let tensors = sampleTensors()
    let meta = ["format": "np", "step": "12"]
    try SafeTensors.write(tensors, metadata: meta, to: "\(dir)/m.safetensors")
    var spec: [String: Any] = [:]
    for (name, t) in tensors {
      spec[name] = ["shape": t.shape, "values": t.array.map { Double($0) }]
    }
    let expected = try JSONSerialization.data(withJSONObject: ["tensors": spec, "metadata": meta])
    try expected.write(to: URL(fileURLWithPath: "\(dir)/expected.json"))
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script, "\(dir)/m.safetensors", "\(dir)/expected.json"]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch {
      print("SKIP python interop: python3 not runnable (\(error))")
      return
    }
    p.waitUntilExit()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    if p.terminationStatus == 77 || p.terminationStatus == 127 {
      print("SKIP python interop: \(out.trimmingCharacters(in: .whitespacesAndNewlines)) (pip install safetensors numpy)")
      return
    }
    #expect(p.terminationStatus == 0, "python check failed: \(out)")

    // The other direction: a file written by safetensors.numpy, with several dtypes.
    let q = Process()
    q.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    q.arguments = ["python3", script, "--write", "\(dir)/py.safetensors"]
    try q.run()
    q.waitUntilExit()
    #expect(q.terminationStatus == 0)
    let file = try SafeTensorsFile(path: "\(dir)/py.safetensors")
    #expect(file.metadata == ["writer": "python"])
    #expect(try file.tensor("w").shape == [2, 3])
    #expect(try file.tensor("w").array == [-0.5, -0.25, 0, 0.25, 0.5, 0.75])
    #expect(file.entry("ids")?.dtype == .i32 && file.entry("bytes")?.dtype == .u8 && file.entry("d")?.shape == [])
    #expect(try file.bytes("ids").withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } == [-2, 0, 7, Int32.max])
    #expect(try file.bytes("bytes") == [0, 128, 255])
    #expect(try file.bytes("d").withUnsafeBytes { $0.loadUnaligned(as: Double.self) } == 1.25)
    #expect(throws: SafeTensorsError.self) { try file.tensor("ids") }
  }

  @Test("Streamed writing: tensors pulled one at a time in the table's order read back by name; a wrong shape leaves no file")
  func streamed() throws {
    let dir = try temporaryDirectory("st-stream")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let tensors = sampleTensors().reversed().map { $0 }  // not in name order
    var pulled: [Int] = []
    try SafeTensors.write(table: tensors.map { ($0.name, $0.tensor.shape) }, metadata: ["k": "v"], to: dir + "/s.safetensors") { i in
      pulled.append(i)
      return tensors[i].tensor
    }
    #expect(pulled == Array(tensors.indices))
    let f = try SafeTensorsFile(path: dir + "/s.safetensors")
    #expect(f.metadata["k"] == "v")
    for (name, t) in tensors { #expect(try f.tensor(name).array == t.array) }
    #expect(throws: SafeTensorsError.self) {
      try SafeTensors.write(table: [("a", [2])], to: dir + "/bad.safetensors") { _ in Tensor(shape: [3]) }
    }
    #expect(!FileManager.default.fileExists(atPath: dir + "/bad.safetensors"))
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["s.safetensors"])
  }

  @Test("check(expected:) names the problem")
  func expectedTable() throws {
    let file = try SafeTensorsFile(bytes: image(
      header: #"{"layers.3.w_in":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"I32","shape":[1],"data_offsets":[24,28]}}"#,
      data: [UInt8](repeating: 0, count: 28)), name: "m.safetensors")
    func message(_ expected: [(name: String, shape: [Int])]) -> String {
      do { try file.check(expected: expected); return "" } catch { return "\(error)" }
    }
    #expect(message([("layers.3.w_in", [3, 2]), ("b", [1])]).contains("tensor layers.3.w_in has shape [2, 3], expected [3, 2]"))
    #expect(message([("layers.3.w_in", [2, 3]), ("c", [1])]).contains("missing tensor c"))
    #expect(message([("layers.3.w_in", [2, 3])]).contains("unexpected tensor b"))
    #expect(message([("layers.3.w_in", [2, 3]), ("b", [1])]).contains("dtype I32, expected F32"))
    #expect(message([("layers.3.w_in", [2, 3])]).contains("m.safetensors"))
    // Non-F32 dtypes are validated and readable as bytes, not as Tensor.
    #expect(try file.bytes("b").count == 4)
    #expect(throws: SafeTensorsError.self) { try file.tensor("b") }
  }

  @Test("Hand-made defects are typed errors", arguments: [
    ("", [UInt8](), SafeTensorsError.Kind.truncated),
    (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, [UInt8](repeating: 0, count: 16), .duplicateName),
    (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, [UInt8](repeating: 0, count: 12), .badOffsets),
    (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, [UInt8](repeating: 0, count: 8), .badOffsets),
    (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 8), .sizeMismatch),
    (#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 8), .unknownDType),
    (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 4), .badOffsets),
    (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 12), .badOffsets),
    (#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 8), .badHeader),
    (#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 8), .sizeMismatch),
    (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999]}}"#, [UInt8](), .badJSON),
    (#"[1,2]"#, [UInt8](), .badHeader),
    (#"{"__metadata__":{"k":3}}"#, [UInt8](), .badHeader),
    (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x"#, [UInt8](repeating: 0, count: 8), .badJSON),
    (#"{"a":{"dtype":"F32","shape":[2]}}"#, [UInt8](), .badHeader),
    ("{\"a\u{01}\":{}}", [UInt8](), .badJSON),
  ])
  func defects(header: String, data: [UInt8], kind: SafeTensorsError.Kind) {
    let bytes = header.isEmpty ? [1, 2, 3] : image(header: header, data: data)
    do {
      _ = try SafeTensorsFile(bytes: bytes, name: "bad.safetensors")
      Issue.record("accepted a defective file: \(header)")
    } catch let e as SafeTensorsError {
      #expect(e.kind == kind, "\(header): \(e)")
      #expect(e.description.contains("bad.safetensors"))
    } catch {
      Issue.record("untyped error \(error)")
    }
  }

  @Test("Header length beyond the file or the 100 MB limit")
  func headerLength() throws {
    var bytes = image(header: "{}", data: [])
    bytes[0] = 0xFF; bytes[1] = 0xFF  // 65535 > file size
    #expect(throws: SafeTensorsError(.truncated, "x", "header length 65535 exceeds the \(bytes.count - 8) bytes after the length field")) {
      try SafeTensorsFile(bytes: bytes, name: "x")
    }
    bytes[7] = 0x01  // 2^56 + ...: over the limit
    do { _ = try SafeTensorsFile(bytes: bytes, name: "x"); Issue.record("accepted") } catch let e as SafeTensorsError {
      #expect(e.kind == .headerTooLarge)
    }
  }

  @Test("Missing file, empty file and a directory are typed errors")
  func fileErrors() throws {
    let dir = try temporaryDirectory("stf")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(path: "\(dir)/nope.safetensors") }
    _ = FileManager.default.createFile(atPath: "\(dir)/empty.safetensors", contents: Data())
    do { _ = try SafeTensorsFile(path: "\(dir)/empty.safetensors"); Issue.record("accepted") } catch let e as SafeTensorsError {
      #expect(e.kind == .truncated && e.description.contains("empty.safetensors"), "\(e)")
    }
    #expect(throws: SafeTensorsError.self) { try SafeTensors.write([("x", Tensor(shape: [1]))], to: "\(dir)/no/such/dir/x.safetensors") }
    #expect(throws: SafeTensorsError.self) { try SafeTensors.write([("x", Tensor(shape: [1])), ("x", Tensor(shape: [1]))], to: "\(dir)/d.safetensors") }
  }

  @Test("A file truncated after it was opened: reading past the cut throws .changed naming the file (no SIGBUS); before it still reads")
  func truncatedWhileOpen() throws {
    let dir = try temporaryDirectory("stcut")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = "\(dir)/cut.safetensors"
    let a = Tensor(shape: [8], values: (0..<8).map { Float($0) })
    let b = Tensor(shape: [16, 1024], values: (0..<16_384).map { Float($0) * 0.5 })  // 64 KiB: many pages past the cut
    try SafeTensors.write([("a", a), ("b", b)], to: path)
    let file = try SafeTensorsFile(path: path)
    let start = try #require(file.entry("b")).begin
    #expect(truncate(path, off_t(8 + 4096 + start)) == 0)  // inside b
    #expect(try file.tensor("a").array == a.array)
    for read in [{ _ = try file.tensor("b") }, { _ = try file.bytes("b") }, { try file.load(into: [("a", Tensor(shape: [8])), ("b", Tensor(shape: [16, 1024]))]) }] {
      do { try read(); Issue.record("read a truncated tensor") } catch let e as SafeTensorsError {
        #expect(e.kind == .changed && e.description.contains("cut.safetensors") && e.description.contains("changed while in use"), "\(e)")
      }
    }
  }

  @Test("Fuzz: 4000 seeded truncations and byte/bit flips either load consistently or throw")
  func fuzz() throws {
    let dir = try temporaryDirectory("stfuzz")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try SafeTensors.write(Array(sampleTensors().prefix(4)), metadata: ["k": "v"], to: "\(dir)/ok.safetensors")
    let valid = Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/ok.safetensors")))
    var rng = FuzzRandom(seed: 12345)
    func next(_ bound: Int) -> Int { rng.next(bound) }
    var loaded = 0, rejected = 0
    for c in 0..<4000 {
      var bytes = valid
      switch c % 4 {
      case 0: bytes = Array(bytes.prefix(next(bytes.count)))  // truncation
      case 1: bytes[next(bytes.count)] ^= UInt8(1 << next(8))  // one bit
      case 2:  // bytes in the length field or header
        for _ in 0...next(3) { bytes[next(min(bytes.count, 8 + 200))] = UInt8(next(256)) }
      default:  // structural characters of the header swapped in
        let chars = Array("{}[]\",:0123456789-eE.\\ ".utf8)
        bytes[8 + next(bytes.count - 8)] = chars[next(chars.count)]
      }
      do {
        let file = try SafeTensorsFile(bytes: bytes, name: "fuzz")
        // A file that loads must be self-consistent: every tensor readable with its byte size.
        var covered = 0
        for e in file.entries {
          let raw = try file.bytes(e.name)
          #expect(raw.count == e.shape.reduce(e.dtype.size, *))
          if e.dtype == .f32 { #expect(try file.tensor(e.name).count * 4 == raw.count) }
          covered += raw.count
        }
        #expect(covered == bytes.count - 8 - Int(bytes.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }))
        loaded += 1
      } catch is SafeTensorsError {
        rejected += 1
      }
    }
    // The fuzz must exercise both outcomes, else it tests nothing.
    #expect(loaded > 100 && rejected > 1000, "loaded \(loaded), rejected \(rejected)")
    // A few truncations through the file path too.
    for cut in [0, 7, 8, 9, 40, valid.count - 1] {
      let path = "\(dir)/cut\(cut).safetensors"
      try Data(valid.prefix(cut)).write(to: URL(fileURLWithPath: path))
      #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(path: path) }
    }
  }
}
