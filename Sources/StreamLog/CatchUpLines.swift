import ReplicationCore

#if canImport(Glibc)
    import Glibc
#endif

/// The lines the log keeps and catch-up sends, `RDATA <stream> <token> <row>\n`, read back: by the log's
/// pages and checks, by the comparison of a re-sent batch, and by the shared streams' run entries.
public enum CatchUpLines {
    /// Calls `body` with each line's stream name, token (`nil` when the line is not `RDATA <stream>
    /// <token> <row>`, or its token does not fit an Int64) and row.
    public static func forEach(
        of lines: UnsafeRawBufferPointer,
        _ body: (_ stream: UnsafeRawBufferPointer, _ token: Int64?, _ row: UnsafeRawBufferPointer) -> Void
    ) {
        var start = 0
        while start < lines.count {
            let line = parse(at: start, in: lines)
            body(
                UnsafeRawBufferPointer(rebasing: lines[line.stream]), line.token,
                UnsafeRawBufferPointer(rebasing: lines[line.row]))
            start = line.next
        }
    }

    /// The token of the first line, if it is `RDATA <stream> <token> <row>`.
    public static func firstToken(in lines: UnsafeRawBufferPointer) -> Int64? { parse(at: 0, in: lines).token }

    private static let rdata = Array("RDATA".utf8)
    private static let newline = UInt8(ascii: "\n")
    private static let space = UInt8(ascii: " ")

    /// The parts of the line starting at `start`, and where the next line starts.
    static func parse(at start: Int, in lines: UnsafeRawBufferPointer)
        -> (stream: Range<Int>, token: Int64?, row: Range<Int>, next: Int)
    {
        // The line's end and spaces found with memchr, the word compared with memcmp: a generic scan for the end
        // was half of a follower's time on runs, generic slices and `String.UTF8View` for the rest about 1,000
        // instructions a line, two thirds of its read path then (BENCHMARKS.md).
        let end =
            start < lines.count ? lines.firstIndex(of: newline, in: start..<lines.count) ?? lines.count : lines.count
        guard let first = lines.firstIndex(of: space, in: start..<end),
            let second = lines.firstIndex(of: space, in: (first + 1)..<end),
            let third = lines.firstIndex(of: space, in: (second + 1)..<end),
            first - start == rdata.count, memcmp(lines.baseAddress! + start, rdata, rdata.count) == 0
        else {
            return (start..<start, nil, start..<end, end + 1)
        }
        var token: Int64? = third > second + 1 ? 0 : nil
        for digit in lines[(second + 1)..<third] {
            guard let value = token, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else {
                token = nil
                break
            }
            let (tens, overflowed) = value.multipliedReportingOverflow(by: 10)
            let (next, overflowedAgain) = tens.addingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
            token = overflowed || overflowedAgain ? nil : next
        }
        return ((first + 1)..<second, token, (third + 1)..<end, end + 1)
    }
}
