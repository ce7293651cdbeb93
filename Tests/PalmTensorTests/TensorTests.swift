import Testing
@testable import PalmTensor

@Suite struct TensorTests {
  @Test func alignedAndZeroed() {
    let t = Tensor(shape: [3, 5])
    #expect(Int(bitPattern: t.pointer) % 64 == 0)
    #expect(t.array == Array(repeating: 0, count: 15))
  }

  @Test func viewsShareStorage() {
    let t = Tensor(shape: [4, 3], values: (0..<12).map(Float.init))
    let r = t.rows(1..<3)
    #expect(r.shape == [2, 3])
    #expect(r.array == [3, 4, 5, 6, 7, 8])
    r[0, 0] = 100
    #expect(t[1, 0] == 100)
    #expect(t.reshaped([2, 6])[0, 3] == 100)
  }

  @Test func arenaBumpsAlignsAndThrowsWhenFull() throws {
    let arena = Arena(capacity: 64)
    let a = try arena.allocate([3])
    let b = try arena.allocate([5])
    #expect(b.pointer - a.pointer == Arena.alignment)
    #expect(Int(bitPattern: b.pointer) % 64 == 0)
    #expect(arena.used == 32)
    #expect(throws: Arena.Failure.self) { try arena.allocate([40]) }
    arena.reset()
    #expect(arena.used == 0)
    #expect(arena.highWater == 32)
  }
}
