// SafeTensors: read and write the Hugging Face safetensors format (huggingface/safetensors README
// and safetensors/src/tensor.rs): an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}} padded
// with spaces to 8-byte alignment, then the packed little-endian data (offsets relative to it).
//
// The reader is hardened for untrusted files: bounded header, its own strict JSON parser (rejects
// duplicate keys, depth > 32), known dtypes, sizes that match shapes, offsets that tile the data
// section exactly. Any defect is a thrown SafeTensorsError naming the file, never a crash. Files are
// read with pread, the header when opened and each tensor straight into its destination, never
// memory-mapped (a file truncated under a map is a SIGBUS). Only F32 converts to Tensor; other
// dtypes are validated and exposed as raw bytes.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a safetensors file could not be read or written, naming the file.
public struct SafeTensorsError: Error, CustomStringConvertible, Equatable {
  public enum Kind: Equatable, Sendable {
    case io, truncated, headerTooLarge, badJSON, badHeader, unknownDType, sizeMismatch, badOffsets,
      duplicateName, badName, wrongDType, missingTensor, unexpectedTensor, shapeMismatch
    /// The file became shorter after it was opened (truncated or rewritten while being read).
    case changed
  }
  public let kind: Kind
  public let file: String
  public let message: String
  public var description: String { "safetensors \(file): \(message)" }
  public init(_ kind: Kind, _ file: String, _ message: String) {
    self.kind = kind
    self.file = file
    self.message = message
  }
}

/// A safetensors element type.
public enum SafeTensorsDType: String, CaseIterable, Sendable {
  case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32", i16 = "I16",
    i8 = "I8", u8 = "U8", bool = "BOOL"
  /// Bytes per element.
  public var size: Int {
    switch self {
    case .f64, .i64: 8
    case .f32, .i32: 4
    case .f16, .bf16, .i16: 2
    case .i8, .u8, .bool: 1
    }
  }
}

/// Writing safetensors files.
public enum SafeTensors {
  /// Largest header accepted by the reader (the reference implementation's limit).
  public static let maxHeaderBytes = 100_000_000

  /// Writes F32 tensors to `path` atomically (temp file, fsync, rename, fsync of the directory).
  ///
  /// Tensors are laid out in sorted name order (UTF-8 byte order), so the same input gives the same
  /// bytes. `metadata` becomes the header's `__metadata__` (omitted when empty).
  /// ```swift
  /// try SafeTensors.write([("embed", e), ("ln_f.scale", s)], metadata: ["step": "10"], to: "model.safetensors")
  /// ```
  /// - Throws: `SafeTensorsError` (`.badName` for empty, duplicate or reserved names, `.io` when the
  ///   file system fails, e.g. a full disk; the previous file at `path` is then intact).
  public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                           to path: String) throws {
    let sorted = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    try write(table: sorted.map { ($0.name, $0.tensor.shape) }, metadata: metadata, to: path) { sorted[$0].tensor }
  }

  /// A file whose tensors are produced one at a time, in `table`'s order (the data section follows
  /// that order; the header lists them by name): `tensor(i)` is called once for i = 0, 1, ... and
  /// its result written at once, so the writer never holds more than one tensor. Errors as
  /// `write(_:metadata:to:)`; a tensor of another shape than its table entry is `.shapeMismatch`.
  public static func write(table: [(name: String, shape: [Int])], metadata: [String: String] = [:], to path: String,
                           tensor: (Int) throws -> Tensor) throws {
    var seen = Set<String>()
    for (name, _) in table {
      if name.isEmpty || name == "__metadata__" {
        throw SafeTensorsError(.badName, path, "tensor name \"\(name)\" is not allowed")
      }
      if !seen.insert(name).inserted {
        throw SafeTensorsError(.duplicateName, path, "tensor \(name) appears twice")
      }
    }
    var offsets: [Int] = [], offset = 0
    for (_, shape) in table { offsets.append(offset); offset += shape.reduce(1, *) * 4 }
    let byName = table.indices.sorted { table[$0].name.utf8.lexicographicallyPrecedes(table[$1].name.utf8) }
    var json = "{"
    var first = true
    if !metadata.isEmpty {
      json += "\"__metadata__\":{"
      let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      json += keys.map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
      json += "}"
      first = false
    }
    for i in byName {
      let (name, shape) = table[i]
      if !first { json += "," }
      first = false
      json += "\(jsonString(name)):{\"dtype\":\"F32\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],"
      json += "\"data_offsets\":[\(offsets[i]),\(offsets[i] + shape.reduce(1, *) * 4)]}"
    }
    json += "}"
    var header = Array(json.utf8)
    while (8 + header.count) % 8 != 0 { header.append(0x20) }
    var prefix = [UInt8](repeating: 0, count: 8)
    var n = UInt64(header.count)
    for i in 0..<8 { prefix[i] = UInt8(truncatingIfNeeded: n); n >>= 8 }
    let head = prefix + header
    do {
      try AtomicFile.write(to: path) { put in
        try head.withUnsafeBytes { try put($0) }
        for (i, (name, shape)) in table.enumerated() {
          let t = try tensor(i)
          guard t.shape == shape else {
            throw SafeTensorsError(.shapeMismatch, path, "tensor \(name) is \(t.shape), its header entry \(shape)")
          }
          try put(UnsafeRawBufferPointer(start: UnsafeRawPointer(t.pointer), count: t.count * 4))
        }
      }
    } catch let e as FileError {
      throw SafeTensorsError(.io, path, e.description)
    }
  }

  /// A JSON string literal for `s` (escapes quotes, backslashes and control characters).
  static func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      default:
        if u.value < 0x20 {
          let h = String(u.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    return out + "\""
  }
}

/// A validated safetensors file: its header read and checked when opened, each tensor read (pread)
/// straight into its destination when asked for. Nothing is memory-mapped: a file truncated while
/// it is open makes the next read throw `.changed` naming the file, where a map would end the
/// process with SIGBUS (see MappedFile.swift, `DataFile`). The file stays open while this object lives.
///
/// ```swift
/// let file = try SafeTensorsFile(path: "model.safetensors")
/// try file.check(expected: parameters.entries.map { ($0.name, $0.shape) })
/// let embed = try file.tensor("embed")
/// ```
public final class SafeTensorsFile: @unchecked Sendable {
  /// One tensor's header entry.
  public struct Entry: Equatable, Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Byte range within the data section.
    public let begin: Int
    public let end: Int
  }

  public let path: String
  /// Header entries in file (offset) order.
  public let entries: [Entry]
  /// The `__metadata__` map (empty when absent).
  public let metadata: [String: String]
  private let index: [String: Int]
  /// Where the bytes come from: the open file, or an in-memory image.
  private enum Source { case file(DataFile), memory(MappedFile) }
  private let source: Source
  private let dataStart: Int

  /// Opens `path` and validates its header against the file's size (the data is read later).
  /// - Throws: `SafeTensorsError` naming the file and the defect.
  public init(path: String) throws {
    let file: DataFile
    do {
      file = try DataFile(path: path) { st in
        let size = Int(st.st_size)
        if size < 8 {
          throw SafeTensorsError(.truncated, path, "file is \(size) bytes, shorter than the 8-byte header length")
        }
      }
    } catch let failure as MappedFile.Failure {
      throw SafeTensorsFile.error(failure, path)
    }
    var first = [UInt8](repeating: 0, count: 8)
    try SafeTensorsFile.reading(path) { try first.withUnsafeMutableBytes { try file.read(into: $0, at: 0) } }
    let headerLen = try SafeTensorsFile.headerLength(first, size: file.count, path: path)
    var header = [UInt8](repeating: 0, count: headerLen)
    try SafeTensorsFile.reading(path) { try header.withUnsafeMutableBytes { try file.read(into: $0, at: 8) } }
    let parsed = try header.withUnsafeBytes { try SafeTensorsFile.parse(header: $0, size: file.count, path: path) }
    self.path = path
    self.source = .file(file)
    entries = parsed.entries
    metadata = parsed.metadata
    dataStart = parsed.dataStart
    index = SafeTensorsFile.index(parsed.entries)
  }

  /// Parses and validates an in-memory file image (copied), labelled `name` in errors.
  public init(bytes: [UInt8], name: String = "<memory>") throws {
    let image: MappedFile
    do {
      image = try MappedFile(copying: bytes)
    } catch {
      throw SafeTensorsError(.io, name, "cannot allocate \(bytes.count) bytes")
    }
    let all = image.bytes
    if all.count < 8 {
      throw SafeTensorsError(.truncated, name, "file is \(all.count) bytes, shorter than the 8-byte header length")
    }
    let headerLen = try SafeTensorsFile.headerLength(Array(all[0..<8]), size: all.count, path: name)
    let parsed = try SafeTensorsFile.parse(header: UnsafeRawBufferPointer(rebasing: all[8..<(8 + headerLen)]),
                                           size: all.count, path: name)
    self.path = name
    self.source = .memory(image)
    entries = parsed.entries
    metadata = parsed.metadata
    dataStart = parsed.dataStart
    index = SafeTensorsFile.index(parsed.entries)
  }

  private static func index(_ entries: [Entry]) -> [String: Int] {
    var index: [String: Int] = [:]
    for (i, e) in entries.enumerated() { index[e.name] = i }
    return index
  }

  /// A `MappedFile.Failure` of this file as a `SafeTensorsError` (`.changed`: shorter than when opened).
  private static func error(_ failure: MappedFile.Failure, _ path: String) -> SafeTensorsError {
    switch failure {
    case .open(let code): SafeTensorsError(.io, path, FileError("open", path, code: code).description)
    case .stat(let code): SafeTensorsError(.io, path, FileError("fstat", path, code: code).description)
    case .changed: SafeTensorsError(.changed, path, failure.reason)
    case .allocate, .read, .io: SafeTensorsError(.io, path, failure.reason)
    }
  }

  private static func reading(_ path: String, _ body: () throws -> Void) throws {
    do { try body() } catch let failure as MappedFile.Failure { throw error(failure, path) }
  }

  /// Reads the data of `e` into `destination` (`e.end - e.begin` bytes).
  private func read(_ e: Entry, into destination: UnsafeMutableRawPointer) throws {
    let count = e.end - e.begin
    switch source {
    case .memory(let image):
      destination.copyMemory(from: image.base + dataStart + e.begin, byteCount: count)
    case .file(let file):
      try SafeTensorsFile.reading(path) {
        try file.read(into: UnsafeMutableRawBufferPointer(start: destination, count: count), at: dataStart + e.begin)
      }
    }
  }

  /// Tensor names in file order.
  public var names: [String] { entries.map(\.name) }

  /// The entry for `name`, if present.
  public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

  /// The raw little-endian bytes of tensor `name`, read from the file.
  /// - Throws: `.missingTensor`, or `.changed` / `.io` when the file can no longer be read.
  public func bytes(_ name: String) throws -> [UInt8] {
    guard let e = entry(name) else { throw SafeTensorsError(.missingTensor, path, "missing tensor \(name)") }
    var out = [UInt8](repeating: 0, count: e.end - e.begin)
    try out.withUnsafeMutableBytes { if let p = $0.baseAddress { try read(e, into: p) } }
    return out
  }

  /// A new Tensor holding a copy of F32 tensor `name`.
  /// - Throws: `.missingTensor`, or `.wrongDType` for a tensor that is not F32.
  public func tensor(_ name: String) throws -> Tensor {
    guard let e = entry(name) else { throw SafeTensorsError(.missingTensor, path, "missing tensor \(name)") }
    let t = Tensor(shape: e.shape)
    try copy(name, into: t)
    return t
  }

  /// Reads F32 tensor `name` into `destination`, whose shape must match (one pread, no copy between).
  /// - Throws: `.missingTensor`, `.wrongDType`, `.shapeMismatch`; `.changed` when the file has
  ///   become shorter since it was opened (truncated), `.io` when a read fails.
  public func copy(_ name: String, into destination: Tensor) throws {
    guard let e = entry(name) else { throw SafeTensorsError(.missingTensor, path, "missing tensor \(name)") }
    if e.dtype != .f32 {
      throw SafeTensorsError(.wrongDType, path, "tensor \(name) has dtype \(e.dtype.rawValue), expected F32")
    }
    if e.shape != destination.shape {
      throw SafeTensorsError(.shapeMismatch, path,
                             "tensor \(name) has shape \(e.shape), expected \(destination.shape)")
    }
    try read(e, into: UnsafeMutableRawPointer(destination.pointer))
  }

  /// Checks that the file holds exactly the `expected` F32 tensors with these shapes.
  /// - Throws: the first problem, as "missing tensor ...", "unexpected tensor ...",
  ///   "tensor X has shape [..], expected [..]" or a dtype mismatch.
  public func check(expected: [(name: String, shape: [Int])]) throws {
    var wanted = Set<String>()
    for (name, shape) in expected {
      wanted.insert(name)
      guard let e = entry(name) else { throw SafeTensorsError(.missingTensor, path, "missing tensor \(name)") }
      if e.dtype != .f32 {
        throw SafeTensorsError(.wrongDType, path, "tensor \(name) has dtype \(e.dtype.rawValue), expected F32")
      }
      if e.shape != shape {
        throw SafeTensorsError(.shapeMismatch, path, "tensor \(name) has shape \(e.shape), expected \(shape)")
      }
    }
    if let extra = entries.first(where: { !wanted.contains($0.name) }) {
      throw SafeTensorsError(.unexpectedTensor, path, "unexpected tensor \(extra.name)")
    }
  }

  /// Checks against `destinations` (as `check(expected:)`) and copies every tensor into them.
  public func load(into destinations: [(name: String, tensor: Tensor)]) throws {
    try check(expected: destinations.map { ($0.name, $0.tensor.shape) })
    for (name, t) in destinations { try copy(name, into: t) }
  }

  // MARK: - Parsing

  struct Parsed {
    var entries: [Entry]
    var metadata: [String: String]
    var dataStart: Int
  }

  /// The header length that the first 8 bytes of a file of `size` bytes give, checked against the
  /// limit and the size.
  static func headerLength(_ first: [UInt8], size: Int, path: String) throws -> Int {
    var n: UInt64 = 0
    for i in (0..<8).reversed() { n = n << 8 | UInt64(first[i]) }
    if n > UInt64(SafeTensors.maxHeaderBytes) {
      throw SafeTensorsError(.headerTooLarge, path, "header length \(n) exceeds the limit of \(SafeTensors.maxHeaderBytes) bytes")
    }
    if n > UInt64(size - 8) {
      throw SafeTensorsError(.truncated, path, "header length \(n) exceeds the \(size - 8) bytes after the length field")
    }
    return Int(n)
  }

  /// Parses the JSON `header` (the bytes after the length field) of a file of `size` bytes.
  static func parse(header: UnsafeRawBufferPointer, size: Int, path: String) throws -> Parsed {
    let dataStart = 8 + header.count
    let dataLen = size - dataStart
    var parser = JSONParser(header)
    let root: JSONValue
    do { root = try parser.parseDocument() } catch let e as JSONParser.Failure {
      if let name = e.duplicateKey {
        throw SafeTensorsError(.duplicateName, path, "the header names \"\(name)\" twice")
      }
      throw SafeTensorsError(.badJSON, path, "header is not valid JSON: \(e.message) at byte \(e.offset)")
    }
    guard case .object(let members) = root else {
      throw SafeTensorsError(.badHeader, path, "header is not a JSON object")
    }
    var entries: [Entry] = []
    var metadata: [String: String] = [:]
    for (name, value) in members {
      if name == "__metadata__" {
        guard case .object(let kv) = value else {
          throw SafeTensorsError(.badHeader, path, "__metadata__ is not an object")
        }
        for (k, v) in kv {
          guard case .string(let s) = v else {
            throw SafeTensorsError(.badHeader, path, "__metadata__ value for \(k) is not a string")
          }
          metadata[k] = s
        }
        continue
      }
      entries.append(try entry(name, value, dataLen: dataLen, path: path))
    }
    // Offsets must tile [0, dataLen) exactly: sorted by begin, each starts where the last ended.
    entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
    var cursor = 0
    for e in entries {
      if e.begin != cursor {
        throw SafeTensorsError(.badOffsets, path, e.begin < cursor
          ? "tensor \(e.name) at bytes [\(e.begin), \(e.end)) overlaps the previous tensor ending at \(cursor)"
          : "gap before tensor \(e.name): it starts at byte \(e.begin), the previous tensor ends at \(cursor)")
      }
      cursor = e.end
    }
    if cursor != dataLen {
      throw SafeTensorsError(cursor < dataLen ? .badOffsets : .truncated, path,
                             "tensors cover \(cursor) bytes but the data section holds \(dataLen)")
    }
    return Parsed(entries: entries, metadata: metadata, dataStart: dataStart)
  }

  private static func entry(_ name: String, _ value: JSONValue, dataLen: Int, path: String) throws -> Entry {
    guard case .object(let fields) = value else {
      throw SafeTensorsError(.badHeader, path, "entry for tensor \(name) is not an object")
    }
    var dtypeName: String?
    var shape: [Int]?
    var offsets: [Int]?
    for (k, v) in fields {
      switch k {
      case "dtype":
        guard case .string(let s) = v else { throw SafeTensorsError(.badHeader, path, "tensor \(name): dtype is not a string") }
        dtypeName = s
      case "shape": shape = try intArray(v, "shape", name, path)
      case "data_offsets": offsets = try intArray(v, "data_offsets", name, path)
      default: throw SafeTensorsError(.badHeader, path, "tensor \(name): unknown field \(k)")
      }
    }
    guard let dtypeName, let shape, let offsets else {
      throw SafeTensorsError(.badHeader, path, "tensor \(name): needs dtype, shape and data_offsets")
    }
    guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
      throw SafeTensorsError(.unknownDType, path, "tensor \(name): unknown dtype \(dtypeName)")
    }
    guard offsets.count == 2 else {
      throw SafeTensorsError(.badHeader, path, "tensor \(name): data_offsets has \(offsets.count) values, expected 2")
    }
    let (begin, end) = (offsets[0], offsets[1])
    if begin > end || end > dataLen {
      throw SafeTensorsError(.badOffsets, path,
                             "tensor \(name): data_offsets [\(begin), \(end)] outside the \(dataLen)-byte data section")
    }
    var bytes = dtype.size
    for d in shape {
      let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
      if overflow { throw SafeTensorsError(.sizeMismatch, path, "tensor \(name): shape \(shape) overflows") }
      bytes = p
    }
    if bytes != end - begin {
      throw SafeTensorsError(.sizeMismatch, path,
                             "tensor \(name): shape \(shape) of \(dtypeName) needs \(bytes) bytes, data_offsets give \(end - begin)")
    }
    return Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
  }

  private static func intArray(_ v: JSONValue, _ field: String, _ name: String, _ path: String) throws -> [Int] {
    guard case .array(let items) = v else {
      throw SafeTensorsError(.badHeader, path, "tensor \(name): \(field) is not an array")
    }
    return try items.map { item in
      guard case .integer(let i) = item, i >= 0 else {
        throw SafeTensorsError(.badHeader, path, "tensor \(name): \(field) holds something other than a non-negative integer")
      }
      return i
    }
  }
}

// MARK: - A strict, small JSON parser (RFC 8259) for headers

enum JSONValue {
  case object([(String, JSONValue)])
  case array([JSONValue])
  case string(String)
  case integer(Int)
  case number(Double)
  case bool(Bool)
  case null
}

struct JSONParser {
  struct Failure: Error {
    let message: String
    let offset: Int
    var duplicateKey: String? = nil
  }
  private let s: UnsafeRawBufferPointer
  private var i = 0
  private let maxDepth = 32

  init(_ bytes: UnsafeRawBufferPointer) { s = bytes }

  /// One value, surrounded only by whitespace (the safetensors padding is spaces).
  mutating func parseDocument() throws -> JSONValue {
    let v = try value(depth: 0)
    skipSpace()
    if i != s.count { throw Failure(message: "trailing bytes", offset: i) }
    return v
  }

  private mutating func skipSpace() {
    while i < s.count, s[i] == 0x20 || s[i] == 0x0A || s[i] == 0x0D || s[i] == 0x09 { i += 1 }
  }

  private mutating func value(depth: Int) throws -> JSONValue {
    if depth > maxDepth { throw Failure(message: "nesting deeper than \(maxDepth)", offset: i) }
    skipSpace()
    guard i < s.count else { throw Failure(message: "unexpected end", offset: i) }
    switch s[i] {
    case UInt8(ascii: "{"):
      i += 1
      var members: [(String, JSONValue)] = []
      var keys = Set<String>()
      skipSpace()
      if i < s.count, s[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
      while true {
        skipSpace()
        guard i < s.count, s[i] == UInt8(ascii: "\"") else { throw Failure(message: "expected a key", offset: i) }
        let key = try string()
        if !keys.insert(key).inserted { throw Failure(message: "duplicate key \"\(key)\"", offset: i, duplicateKey: key) }
        skipSpace()
        try expect(UInt8(ascii: ":"))
        members.append((key, try value(depth: depth + 1)))
        skipSpace()
        guard i < s.count else { throw Failure(message: "unexpected end in object", offset: i) }
        if s[i] == UInt8(ascii: ",") { i += 1; continue }
        try expect(UInt8(ascii: "}"))
        return .object(members)
      }
    case UInt8(ascii: "["):
      i += 1
      var items: [JSONValue] = []
      skipSpace()
      if i < s.count, s[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
      while true {
        items.append(try value(depth: depth + 1))
        skipSpace()
        guard i < s.count else { throw Failure(message: "unexpected end in array", offset: i) }
        if s[i] == UInt8(ascii: ",") { i += 1; continue }
        try expect(UInt8(ascii: "]"))
        return .array(items)
      }
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"): try literal("true"); return .bool(true)
    case UInt8(ascii: "f"): try literal("false"); return .bool(false)
    case UInt8(ascii: "n"): try literal("null"); return .null
    default: return try number()
    }
  }

  private mutating func expect(_ c: UInt8) throws {
    guard i < s.count, s[i] == c else {
      throw Failure(message: "expected '\(Character(Unicode.Scalar(c)))'", offset: i)
    }
    i += 1
  }

  private mutating func literal(_ word: String) throws {
    for c in word.utf8 { try expect(c) }
  }

  private mutating func number() throws -> JSONValue {
    let start = i
    if i < s.count, s[i] == UInt8(ascii: "-") { i += 1 }
    let digitsStart = i
    while i < s.count, s[i] >= 0x30 && s[i] <= 0x39 { i += 1 }
    if i == digitsStart { throw Failure(message: "unexpected character", offset: start) }
    if i - digitsStart > 1 && s[digitsStart] == 0x30 { throw Failure(message: "leading zero", offset: start) }
    var isInteger = true
    if i < s.count, s[i] == UInt8(ascii: ".") {
      isInteger = false
      i += 1
      let f = i
      while i < s.count, s[i] >= 0x30 && s[i] <= 0x39 { i += 1 }
      if i == f { throw Failure(message: "bad fraction", offset: start) }
    }
    if i < s.count, s[i] == UInt8(ascii: "e") || s[i] == UInt8(ascii: "E") {
      isInteger = false
      i += 1
      if i < s.count, s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") { i += 1 }
      let e = i
      while i < s.count, s[i] >= 0x30 && s[i] <= 0x39 { i += 1 }
      if i == e { throw Failure(message: "bad exponent", offset: start) }
    }
    let text = String(decoding: UnsafeRawBufferPointer(rebasing: s[start..<i]), as: UTF8.self)
    if isInteger {
      guard let v = Int(text) else { throw Failure(message: "integer \(text) out of range", offset: start) }
      return .integer(v)
    }
    guard let d = Double(text) else { throw Failure(message: "bad number", offset: start) }
    return .number(d)
  }

  private mutating func hex4() throws -> UInt32 {
    guard i + 4 <= s.count else { throw Failure(message: "short \\u escape", offset: i) }
    var v: UInt32 = 0
    for _ in 0..<4 {
      let c = s[i]
      let d: UInt32
      switch c {
      case 0x30...0x39: d = UInt32(c - 0x30)
      case 0x41...0x46: d = UInt32(c - 0x41 + 10)
      case 0x61...0x66: d = UInt32(c - 0x61 + 10)
      default: throw Failure(message: "bad hex digit in \\u escape", offset: i)
      }
      v = v << 4 | d
      i += 1
    }
    return v
  }

  private mutating func string() throws -> String {
    i += 1  // opening quote
    var bytes: [UInt8] = []
    while true {
      guard i < s.count else { throw Failure(message: "unterminated string", offset: i) }
      let c = s[i]
      if c == UInt8(ascii: "\"") { i += 1; break }
      if c < 0x20 { throw Failure(message: "control character in string", offset: i) }
      if c != UInt8(ascii: "\\") { bytes.append(c); i += 1; continue }
      i += 1
      guard i < s.count else { throw Failure(message: "unterminated escape", offset: i) }
      let e = s[i]
      i += 1
      switch e {
      case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): bytes.append(e)
      case UInt8(ascii: "b"): bytes.append(0x08)
      case UInt8(ascii: "f"): bytes.append(0x0C)
      case UInt8(ascii: "n"): bytes.append(0x0A)
      case UInt8(ascii: "r"): bytes.append(0x0D)
      case UInt8(ascii: "t"): bytes.append(0x09)
      case UInt8(ascii: "u"):
        var code = try hex4()
        if code >= 0xD800 && code < 0xDC00 {
          guard i + 6 <= s.count, s[i] == UInt8(ascii: "\\"), s[i + 1] == UInt8(ascii: "u") else {
            throw Failure(message: "lone surrogate", offset: i)
          }
          i += 2
          let low = try hex4()
          guard low >= 0xDC00 && low < 0xE000 else { throw Failure(message: "bad surrogate pair", offset: i) }
          code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        } else if code >= 0xDC00 && code < 0xE000 {
          throw Failure(message: "lone surrogate", offset: i)
        }
        guard let scalar = Unicode.Scalar(code) else { throw Failure(message: "bad code point", offset: i) }
        bytes.append(contentsOf: Array(String(Character(scalar)).utf8))
      default: throw Failure(message: "bad escape", offset: i - 1)
      }
    }
    // Reject invalid UTF-8 instead of silently repairing it.
    guard let str = String(validating: bytes, as: UTF8.self) else {
      throw Failure(message: "string is not valid UTF-8", offset: i)
    }
    return str
  }
}
