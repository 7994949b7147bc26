// Fuzz targets for the code that reads bytes from the network, one per parser.
//
// Built with `-sanitize=fuzzer,address -DFUZZING` (Tests/fuzz.sh), it is libFuzzer's driver:
// `replication-fuzz TARGET [libFuzzer flags and corpus folders]` (see FuzzTarget.swift). Built normally,
// `replication-fuzz TARGET FILE...` runs each file through TARGET once, which is how a corpus or a crash is
// replayed under a debugger.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if FUZZING
// The driver calls LLVMFuzzerInitialize, which takes TARGET out of the arguments, then fuzzes.
var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzerTestOneInput(data, size) })
#else
let arguments = CommandLine.arguments
guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) else {
    printError(FuzzTarget.usage)
    exit(2)
}
for path in arguments.dropFirst(2) {
    guard let file = fopen(path, "rb") else {
        printError("replication-fuzz: cannot open \(path)")
        exit(1)
    }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { bytes += chunk[..<count] }
    fclose(file)
    bytes.withUnsafeBytes { target.run($0) }
}
print("replication-fuzz: \(arguments.count - 2) inputs through \(target.rawValue), every check held")
#endif
