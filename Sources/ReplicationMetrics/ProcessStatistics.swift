#if canImport(Glibc)
import Glibc
#endif

/// The `process_*` figures, read from `/proc/self` (Linux).
public struct ProcessStatistics: Sendable, Equatable {
    public var cpuSeconds: Double
    public var residentBytes: Double
    public var virtualBytes: Double
    public var openFDs: Double
    public var maxFDs: Double
    public var startTimeSeconds: Double

    public init(
        cpuSeconds: Double, residentBytes: Double, virtualBytes: Double, openFDs: Double, maxFDs: Double,
        startTimeSeconds: Double
    ) {
        self.cpuSeconds = cpuSeconds
        self.residentBytes = residentBytes
        self.virtualBytes = virtualBytes
        self.openFDs = openFDs
        self.maxFDs = maxFDs
        self.startTimeSeconds = startTimeSeconds
    }

    /// The current process's figures, or `nil` where `/proc` is not available.
    public static func current() -> ProcessStatistics? {
        #if os(Linux)
        guard let field = statFields("/proc/self/stat") else { return nil }
        let bootTime =
            readFile("/proc/stat")?.split(separator: "\n").first { $0.hasPrefix("btime ") }
            .flatMap { Double($0.dropFirst(6)) } ?? 0
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        return ProcessStatistics(
            cpuSeconds: (field(14) + field(15)) / ticks, residentBytes: field(24) * pageSize,
            virtualBytes: field(23), openFDs: Double(openDescriptors()),
            maxFDs: Double(limit.rlim_cur), startTimeSeconds: bootTime + field(22) / ticks)
        #else
        return nil
        #endif
    }

    /// CPU seconds and resident bytes of another process (a server under benchmark), or `nil`.
    package static func cpuAndResident(ofProcess pid: Int32) -> (cpuSeconds: Double, residentBytes: Double)? {
        guard let field = statFields("/proc/\(pid)/stat") else { return nil }
        return ((field(14) + field(15)) / ticks, field(24) * pageSize)
    }

    private static var ticks: Double { Double(sysconf(Int32(_SC_CLK_TCK))) }
    private static var pageSize: Double { Double(sysconf(Int32(_SC_PAGESIZE))) }

    /// Field N (numbered as in proc(5)) of a `stat` file.
    private static func statFields(_ path: String) -> ((Int) -> Double)? {
        guard let stat = readFile(path), let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)": state is field 3, so field N is at index N - 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return { number in fields.count > number - 3 ? Double(fields[number - 3]) ?? 0 : 0 }
    }

    private static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Linux 6.2 and later report the number of open descriptors as the size of `/proc/self/fd`, which
    /// costs one `stat` instead of a directory walk (about a microsecond per descriptor).
    private static func openDescriptors() -> Int {
        var info = stat()
        if stat("/proc/self/fd", &info) == 0, info.st_size > 0 { return Int(info.st_size) }
        return countEntries("/proc/self/fd")
    }

    private static func countEntries(_ path: String) -> Int {
        guard let directory = opendir(path) else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return count - 1  // the descriptor opendir itself holds
    }
}
