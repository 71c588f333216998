import ArgumentParser
import Foundation
import SluiceEngine

/// Times `matmul` on the default model's real weight matrices (one layer's
/// projections and the output head), beside the dequantize-then-multiply
/// kernel it replaced, in the same run and interleaved so that load from other
/// processes hits both alike.
struct MatMulBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matmul",
        abstract: "Throughput of the quantized matrix-multiply kernels on the model's weights.")

    @Option(help: "Model file or cache name (default: the default model).")
    var model: String?

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int = ComputePool.availableCores

    @Option(help: "Comma-separated batch sizes (tokens per call).")
    var tokens = "1,8,32,512"

    @Option(help: "Comma-separated tensor names (default: layer 0's projections and the output head).")
    var tensors = "blk.0.attn_q.weight,blk.0.attn_k.weight,blk.0.attn_v.weight,blk.0.attn_output.weight,blk.0.ffn_gate.weight,blk.0.ffn_up.weight,blk.0.ffn_down.weight,token_embd.weight"

    @Option(help: "Rounds per variant; the fastest round is kept.")
    var rounds = 5

    @Option(help: "Minimum seconds per round.")
    var seconds = 0.1

    @Option(help: "Precision of the kernel under test (f32, int16 or int8); the integer kernels are compared with the f32 one.")
    var precision: MatmulPrecision = .float32

    @Flag(help: "Measure this thread's CPU time instead of wall time (with --threads 1: steadier on a loaded machine).")
    var cpuTime = false

    func run() throws {
        let path = try ModelCache().resolve(model)
        let file = try GGUFFile(path: path)
        let pool = ComputePool(threads: threads)
        let batchSizes = tokens.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let useCPUTime = cpuTime
        func now() -> Double {
            var spec = timespec()
            clock_gettime(useCPUTime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &spec)
            return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
        }
        let baseline = precision == .float32 ? "dequantizing kernel" : "f32 kernel"
        print("threads \(threads), \(cpuTime ? "CPU" : "wall") time; GFLOP/s (ms per call): \(precision.rawValue) kernel vs \(baseline)")
        for name in tensors.split(separator: ",").map(String.init) {
            guard let tensor = file.tensor(named: name), tensor.dimensions.count == 2 else {
                throw ValidationError("the model file has no 2-D tensor '\(name)'")
            }
            let columns = tensor.dimensions[0], rows = tensor.dimensions[1]
            let w = WeightMatrix(name: name, type: tensor.type, rows: rows, columns: columns, data: tensor.data, precision: precision)
            let reference = precision == .float32 ? w : WeightMatrix(name: name, type: tensor.type, rows: rows, columns: columns, data: tensor.data)
            for t in batchSizes {
                let x = UnsafeMutablePointer<Float>.allocate(capacity: t * columns)
                let y = UnsafeMutablePointer<Float>.allocate(capacity: t * rows)
                let yReference = UnsafeMutablePointer<Float>.allocate(capacity: t * rows)
                defer { x.deallocate(); y.deallocate(); yReference.deallocate() }
                for i in 0..<(t * columns) { x[i] = Float.random(in: -1...1) }
                var best = (packed: Double.infinity, reference: Double.infinity)
                for _ in 0..<rounds {
                    for variant in 0..<2 {
                        var calls = 0
                        let start = now()
                        var elapsed = 0.0
                        repeat {
                            if variant == 0 {
                                matmul(x, tokens: t, w, into: y, pool: pool)
                            } else if precision == .float32 {
                                dequantizingMatmul(x, tokens: t, w, into: yReference, pool: pool)
                            } else {
                                matmul(x, tokens: t, reference, into: yReference, pool: pool)
                            }
                            calls += 1
                            elapsed = now() - start
                        } while elapsed < self.seconds
                        let perCall = elapsed / Double(calls)
                        if variant == 0 { best.packed = min(best.packed, perCall) } else { best.reference = min(best.reference, perCall) }
                    }
                }
                var mismatches = 0, largest: Float = 0, worstError: Float = 0
                for i in 0..<(t * rows) {
                    if y[i].bitPattern != yReference[i].bitPattern { mismatches += 1 }
                    largest = max(largest, abs(yReference[i]))
                    worstError = max(worstError, abs(y[i] - yReference[i]))
                }
                let agreement = precision == .float32
                    ? (mismatches == 0 ? "" : "  MISMATCH in \(mismatches) outputs")
                    : "  largest error \(String(format: "%.2e", worstError / max(largest, .leastNormalMagnitude))) of the largest output"
                let flop = 2.0 * Double(rows * columns * t)
                func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
                let label = "\(name) \(tensor.type.name) \(rows)x\(columns)".padding(toLength: 44, withPad: " ", startingAt: 0)
                print("\(label) T=\(t)\t\(f(flop / best.packed / 1e9)) (\(f(best.packed * 1e3, 3)) ms)\tvs \(f(flop / best.reference / 1e9)) (\(f(best.reference * 1e3, 3)) ms)\t\(f(best.reference / best.packed, 2))x"
                      + agreement)
            }
        }
    }
}
