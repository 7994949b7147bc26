import CHiredis
import RedisClient
import Testing

@Suite struct RESPTests {
    @Test func commandsAreArraysOfBulkStringsAndBinarySafe() {
        #expect(
            String(decoding: RESPCommand.encode(["GET", "key"]), as: UTF8.self) == "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
        let binary: [UInt8] = [0, 13, 10, 255]
        #expect(
            RESPCommand.encode([Array("SET".utf8), Array("k".utf8), binary]) == Array(
                "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\n".utf8) + binary + [13, 10])
        #expect(
            String(decoding: RESPCommand.encode(["PUBLISH", "c", ""]), as: UTF8.self)
                == "*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$0\r\n\r\n")
    }

    /// Commands are written by our own encoder; hiredis's `redisFormatCommandArgv`, which wrote them before,
    /// is the reference: the same bytes for arguments of every length, empty and binary ones included.
    @Test func commandsAreWrittenAsHiredisFormatsThem() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let arguments = (0..<Int.random(in: 1...12, using: &generator)).map { _ in
                let length = [0, 1, 9, 10, 99, 100, 16_384, Int.random(in: 0...40_000, using: &generator)]
                    .randomElement(
                        using: &generator)!
                // Every byte value, \r and \n included.
                let step = Int.random(in: 1...255, using: &generator)
                return (0..<length).map { UInt8(truncatingIfNeeded: $0 &* step) }
            }
            #expect(RESPCommand.encode(arguments) == Self.hiredisFormat(arguments))
        }
    }

    private static func hiredisFormat(_ arguments: [[UInt8]]) -> [UInt8] {
        var joined = Array(arguments.joined()) + [0]
        let offsets = arguments.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        return joined.withUnsafeMutableBytes { buffer in
            var argv: [UnsafePointer<CChar>?] = offsets.dropLast().map {
                UnsafePointer(buffer.baseAddress!.advanced(by: $0).assumingMemoryBound(to: CChar.self))
            }
            var target: UnsafeMutablePointer<CChar>?
            let length = redisFormatCommandArgv(&target, Int32(arguments.count), &argv, arguments.map(\.count))
            defer { redisFreeCommand(target) }
            return Array(UnsafeRawBufferPointer(start: target, count: Int(length)))
        }
    }

    @Test func repliesOfEveryTypeParsedAcrossReadsOfOneByte() throws {
        let wire = Array(
            "+OK\r\n-ERR wrong\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n".utf8)
        let reader = RESPReader()
        var values: [RedisValue] = []
        for byte in wire {
            try [byte].withUnsafeBytes { try reader.feed($0) }
            while let value = try reader.next() { values.append(value) }
        }
        #expect(
            values == [
                .simpleString("OK"), .error("ERR wrong"), .integer(-42), .bulkString(Array("he\r\no".utf8)), .null,
                .null,
                .array([.array([.integer(1)]), .bulkString([])]),
            ])
    }

    /// Found by fuzzing: hiredis allocated an array's element table as its header arrived, 8 GB for these
    /// 13 bytes. A nested array is refused as well, and a long one within the bound is read.
    @Test func anArrayDeclaringMoreElementsThanAllowedIsAnErrorBeforeAnyAllocation() throws {
        let tooLong = RESPReader.maxArrayElements + 1
        for (wire, length) in [("*1000000000\r\n", 1_000_000_000), ("*2\r\n:1\r\n*\(tooLong)\r\n", tooLong)] {
            let reader = RESPReader()
            try Array(wire.utf8).withUnsafeBytes { try reader.feed($0) }
            let refusal = RedisError.protocolViolation("an array of \(length) elements, more than the 1048576 allowed")
            #expect(throws: refusal) { try reader.next() }
            #expect(throws: refusal) { try [UInt8(ascii: ":")].withUnsafeBytes { try reader.feed($0) } }
        }
        let reader = RESPReader()
        let count = 100_000
        let wire = "*\(count)\r\n" + String(repeating: ":7\r\n", count: count)
        try Array(wire.utf8).withUnsafeBytes { try reader.feed($0) }
        #expect(try reader.next() == .array(Array(repeating: .integer(7), count: count)))
    }

    @Test func bytesThatAreNotRESPAreAnError() throws {
        let reader = RESPReader()
        try Array("?what\r\n".utf8).withUnsafeBytes { try reader.feed($0) }
        #expect(throws: RedisError.self) { try reader.next() }
    }
}

@Suite struct RedisEndpointTests {
    @Test func urlsWithAndWithoutCredentialsPortAndDatabase() throws {
        #expect(try RedisEndpoint(url: "redis://127.0.0.1:6380") == RedisEndpoint(host: "127.0.0.1", port: 6380))
        #expect(try RedisEndpoint(url: "redis://redis") == RedisEndpoint(host: "redis", port: 6379))
        #expect(
            try RedisEndpoint(url: "redis://:s%40cret@db.internal:7000/3")
                == RedisEndpoint(host: "db.internal", port: 7000, password: "s@cret", database: 3))
        #expect(
            try RedisEndpoint(url: "redis://synapse:pw@[::1]:6379/")
                == RedisEndpoint(host: "::1", port: 6379, username: "synapse", password: "pw"))
    }

    @Test func badURLsSayWhatToFix() {
        for (url, hint) in [
            ("http://127.0.0.1:6379", "must start with redis://"), ("redis://:6379", "host is missing"),
            ("redis://h:99999", "port must be"), ("redis://h:6379/x", "database"), ("redis://pw@h", "[user]:password"),
            ("redis://:%zz@h", "two hex digits"),
        ] {
            #expect(throws: RedisURLError.self) { try RedisEndpoint(url: url) }
            do {
                _ = try RedisEndpoint(url: url)
            } catch {
                #expect(error.description.contains(hint), "\(url): \(error)")
            }
        }
    }

    @Test func thePasswordFileReplacesTheURLsAndIsNeverShown() throws {
        let endpoint = try RedisEndpoint(url: "redis://:old@h:1").withPassword(fileContents: "new secret\n")
        #expect(endpoint.password == "new secret")
        #expect(!endpoint.description.contains("secret") && !endpoint.description.contains("old"))
        #expect(throws: RedisURLError.self) { try endpoint.withPassword(fileContents: "\n") }
    }
}
