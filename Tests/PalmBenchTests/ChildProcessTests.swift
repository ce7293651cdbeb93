// ChildProcessTests: the one launcher: exit status, captured and discarded streams, the
// environment, a child that writes more than a pipe holds, a deadline, and a program that is missing.

import Foundation
import Testing
import PalmBench

@Suite struct ChildProcessTests {
  @Test func capturesBothStreamsAndTheExitStatus() throws {
    let r = try ChildProcess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
    #expect(r.status == 3)
    #expect(String(decoding: r.stdout, as: UTF8.self) == "out\n")
    #expect(String(decoding: r.stderr, as: UTF8.self) == "err\n")
  }

  @Test func passesTheEnvironmentAndDiscards() throws {
    let r = try ChildProcess.run("/bin/sh", ["-c", "echo $PALM_CHILD_TEST; echo gone >&2"],
                                 environment: ["PALM_CHILD_TEST": "here"], stderr: .discard)
    #expect(r.status == 0)
    #expect(String(decoding: r.stdout, as: UTF8.self) == "here\n")
    #expect(r.stderr.isEmpty)
  }

  @Test func aChildThatFillsBothPipesDoesNotBlock() throws {
    // 1 MiB on each stream, far past a pipe's 64 KiB.
    let r = try ChildProcess.run("/bin/sh", ["-c", "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2"],
                                 deadline: 60)
    #expect(r.status == 0)
    #expect(r.stdout.count == 1 << 20)
    #expect(r.stderr.count == 1 << 20)
  }

  @Test func aSignalEndsTheChild() throws {
    let r = try ChildProcess.run("/bin/sh", ["-c", "kill -9 $$"])
    #expect(r.status == SIGKILL)
  }

  @Test func theDeadlineKillsTheChild() throws {
    let t0 = Date()
    #expect(throws: ChildProcess.Failure.self) { try ChildProcess.run("/bin/sleep", ["30"], deadline: 0.2) }
    #expect(Date().timeIntervalSince(t0) < 10)
  }

  @Test func aMissingProgramThrows() {
    #expect(throws: ChildProcess.Failure.self) { try ChildProcess.run("/nonexistent/palm-child", []) }
  }
}
