import Foundation
import Testing

@testable import SluiceEngine

/// Dequantization against fixtures made by gguf-py's reference dequantizer
/// (scripts/make-dequant-fixtures): every value must be bit-identical, except
/// that a NaN only has to be a NaN (NaN payloads depend on operand order,
/// which IEEE leaves open).
@Suite(.ownThread) struct DequantizeTests {
    static let supported: [TensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K]

    static func fixture(_ name: String) throws -> Data {
        let url = try #require(Bundle.module.resourceURL).appendingPathComponent("Fixtures/gguf/\(name)")
        return try Data(contentsOf: url)
    }

    static func floats(_ data: Data) -> [Float] {
        data.withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    @Test(arguments: supported)
    func matchesReferenceDequantizer(type: TensorType) throws {
        let blocks = try Self.fixture("\(type.name).blocks.bin")
        let expected = Self.floats(try Self.fixture("\(type.name).expected.bin"))
        #expect(blocks.count % type.bytesPerBlock == 0)
        let count = blocks.count / type.bytesPerBlock * type.blockSize
        #expect(count == expected.count)
        #expect(count >= 2048)

        var actual = [Float](repeating: -12345, count: count)
        blocks.withUnsafeBytes { raw in
            actual.withUnsafeMutableBufferPointer { out in
                dequantizeRow(type, raw.baseAddress!, count: count, into: out.baseAddress!)
            }
        }
        var mismatches = 0
        for i in 0..<count where !Self.same(actual[i], expected[i]) {
            if mismatches < 5 {
                Issue.record("\(type) element \(i): got \(actual[i]) (0x\(String(actual[i].bitPattern, radix: 16))), expected \(expected[i]) (0x\(String(expected[i].bitPattern, radix: 16)))")
            }
            mismatches += 1
        }
        #expect(mismatches == 0, "\(mismatches) of \(count) values differ")
        // The fixtures exercise the edge cases they claim to (except F32/F16/BF16, which are exhaustive or random bits).
        #expect(expected.contains { $0.isNaN })
        #expect(expected.contains { $0.isInfinite })
        #expect(expected.contains { $0.isFinite && $0 != 0 })
    }

    /// Dequantizing from an odd address gives the same values (blocks are not aligned in files).
    @Test(arguments: supported)
    func unalignedSourceGivesSameValues(type: TensorType) throws {
        let blocks = try Self.fixture("\(type.name).blocks.bin")
        let count = min(blocks.count / type.bytesPerBlock, 8) * type.blockSize
        let bytes = count / type.blockSize * type.bytesPerBlock
        var aligned = [Float](repeating: 0, count: count)
        var shifted = [Float](repeating: 0, count: count)
        let copy = [UInt8](repeating: 0, count: 1) + [UInt8](blocks.prefix(bytes))
        blocks.withUnsafeBytes { raw in
            dequantizeRow(type, raw.baseAddress!, count: count, into: &aligned)
        }
        copy.withUnsafeBytes { raw in
            dequantizeRow(type, raw.baseAddress! + 1, count: count, into: &shifted)
        }
        #expect(zip(aligned, shifted).allSatisfy { Self.same($0, $1) })
    }

    /// The integer-only half conversion (used where Float16 is unavailable)
    /// agrees with the reference on all 65,536 bit patterns, NaN payloads included.
    @Test func portableHalfConversionIsExact() throws {
        let expected = Self.floats(try Self.fixture("F16.expected.bin"))
        let wrong = (0...UInt16.max).filter { Dequantize.halfToFloatPortable($0).bitPattern != expected[Int($0)].bitPattern }
        #expect(wrong.isEmpty, "first wrong: \(wrong.prefix(5).map { String($0, radix: 16) })")
    }

    static func same(_ a: Float, _ b: Float) -> Bool {
        a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN)
    }

    @Test func typeSizesMatchTheFormat() {
        let sizes: [TensorType: (Int, Int)] = [
            .f32: (1, 4), .f16: (1, 2), .bf16: (1, 2), .q8_0: (32, 34), .q4_0: (32, 18), .q5_0: (32, 22),
            .q4_K: (256, 144), .q5_K: (256, 176), .q6_K: (256, 210),
        ]
        for type in Self.supported {
            #expect(type.isSupported)
            #expect(type.blockSize == sizes[type]!.0 && type.bytesPerBlock == sizes[type]!.1, "\(type)")
        }
        #expect(TensorType.allCases.filter(\.isSupported).count == Self.supported.count)
        #expect(TensorType(rawValue: 10)?.description == "Q2_K (10)")
        #expect(TensorType(rawValue: 4) == nil)
        #expect(TensorType.q4_K.byteCount(elements: 512) == 288)
        #expect(TensorType.q4_K.byteCount(elements: 100) == nil)
    }
}
