// AtomicFile: a write replaces a regular file, writes through a symbolic link to one, and refuses
// anything a rename would destroy (a device such as /dev/null, a pipe, a directory, a dangling
// link). A FIFO stands in for a device here: the test must never risk /dev/null itself (a rename
// over it once turned this machine's /dev/null into a regular file).
import Foundation
import Testing
@testable import PalmTensor

@Suite("AtomicFile")
struct AtomicFileTests {
  let dir: String

  init() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("palm-atomic-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  func kind(_ path: String) -> mode_t {
    var st = stat()
    return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0
  }

  @Test("replaces a regular file; creates an absent one")
  func regular() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = "\(dir)/a.txt"
    try AtomicFile.write(to: path, bytes: Array("one".utf8))
    try AtomicFile.write(to: path, bytes: Array("two".utf8))
    #expect(try String(contentsOfFile: path, encoding: .utf8) == "two")
  }

  @Test("through a symbolic link: the target is replaced, the link stays")
  func link() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let target = "\(dir)/target.txt", link = "\(dir)/link.txt"
    try AtomicFile.write(to: target, bytes: Array("old".utf8))
    #expect(symlink(target, link) == 0)
    try AtomicFile.write(to: link, bytes: Array("new".utf8))
    #expect(kind(link) == S_IFLNK)
    #expect(try String(contentsOfFile: target, encoding: .utf8) == "new")
  }

  @Test("refuses a pipe, a directory and a dangling link, and leaves each as it was")
  func refusals() throws {
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let fifo = "\(dir)/fifo", sub = "\(dir)/sub", dangling = "\(dir)/dangling"
    #expect(mkfifo(fifo, 0o644) == 0)
    try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
    #expect(symlink("\(dir)/nothing", dangling) == 0)
    for (path, was, words) in [(fifo, S_IFIFO, "not a regular file"), (sub, S_IFDIR, "a directory"), (dangling, S_IFLNK, "link to nothing")] {
      do {
        try AtomicFile.write(to: path, bytes: Array("x".utf8))
        Issue.record("\(path): written")
      } catch let e as FileError {
        #expect("\(e)".contains(words), "\(e)")
      }
      #expect(kind(path) == was, "\(path) changed kind")
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }.isEmpty, "temporary left")
  }
}
