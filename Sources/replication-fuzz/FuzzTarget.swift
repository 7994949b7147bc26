#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The parsers under fuzzing. Each run checks properties, not just the absence of a crash: a failed
/// check traps, and libFuzzer keeps the input that made it fail.
enum FuzzTarget: String, CaseIterable, Sendable {
    case framer, codec, json, writerRow = "writer-row", session, bus, resp, certificate

    static let usage = "usage: replication-fuzz \(allCases.map(\.rawValue).joined(separator: "|")) [libFuzzer flags | FILE...]"

    func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .framer: checkFramer(data)
        case .codec: checkCodec(data)
        case .json: checkJSON(data)
        case .writerRow: checkWriterRow(data)
        case .session: checkSession(data)
        case .bus: checkBus(data)
        case .resp: checkRESP(data)
        case .certificate: checkCertificate(data)
        }
    }
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
}

/// Writes a line to standard error.
func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

#if FUZZING
/// Chosen by `LLVMFuzzerInitialize` before libFuzzer starts, only read afterwards.
nonisolated(unsafe) private var selectedTarget = FuzzTarget.framer

/// libFuzzer's hook before it reads its flags: takes the target name out of the arguments.
@_cdecl("LLVMFuzzerInitialize")
func fuzzerInitialize(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>
) -> Int32 {
    let count = Int(argc.pointee)
    guard count >= 2, let name = argv.pointee[1], let target = FuzzTarget(rawValue: String(cString: name)) else {
        printError(FuzzTarget.usage)
        exit(2)
    }
    selectedTarget = target
    for index in 1..<count { argv.pointee[index] = argv.pointee[index + 1] }  // argv[count] is NULL
    argc.pointee -= 1
    return 0
}

/// libFuzzer's entry point for one input (also referenced by libFuzzer's own `main`).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32
#endif
