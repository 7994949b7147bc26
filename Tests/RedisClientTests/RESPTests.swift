import CHiredis
import NIOCore
import RedisClient
import Testing

@Suite struct RESPTests {
    @Test func commandsAreArraysOfBulkStringsAndBinarySafe() {
        #expect(
            String(decoding: RESPCommand.encode(["GET", "key"]), as: UTF8.self) == "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
        let binary: [UInt8] = [0, 13, 10, 255]
        #expect(
            RESPCommand.encode([ByteBuffer(string: "SET"), ByteBuffer(string: "k"), ByteBuffer(bytes: binary)]) == Array(
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
            #expect(RESPCommand.encode(arguments.map { ByteBuffer(bytes: $0) }) == Self.hiredisFormat(arguments))
        }
    }

    /// A large argument goes out as its own buffer, uncopied; what reaches the socket is the same bytes.
    @Test func largeArgumentsAreHandedOverAsTheyAreBetweenTheCommandsBytes() {
        let large = ByteBuffer(string: String(repeating: "r", count: 5_000))
        let arguments = [ByteBuffer(string: "XADD"), large, ByteBuffer(string: "k"), large]
        var parts: [ByteBuffer] = []
        var buffer = ByteBuffer()
        RESPCommand.write(arguments, into: &buffer, separating: 4_096) { parts.append($0) }
        parts.append(buffer)
        #expect(parts.count == 5)
        #expect(parts[1] == large && parts[3] == large)
        #expect(parts[1].withUnsafeReadableBytes { $0.baseAddress } == large.withUnsafeReadableBytes { $0.baseAddress })
        #expect(Array(parts.map { Array($0.readableBytesView) }.joined()) == RESPCommand.encode(arguments))
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
            try reader.feed(ByteBuffer(bytes: [byte]))
            while let value = try reader.next() { values.append(value) }
        }
        #expect(
            values == [
                .simpleString("OK"), .error("ERR wrong"), .integer(-42), .bulkString(ByteBuffer(string: "he\r\no")),
                .null,
                .null,
                .array([.array([.integer(1)]), .bulkString(ByteBuffer())]),
            ])
    }

    /// Found by fuzzing hiredis's reader, used before: it allocated an array's element table as its header
    /// arrived, 8 GB for these 13 bytes. A nested array is refused as well, and a long one within the bound is read.
    @Test func anArrayDeclaringMoreElementsThanAllowedIsAnErrorBeforeAnyAllocation() throws {
        let tooLong = RESPReader.maxArrayElements + 1
        for (wire, length) in [("*1000000000\r\n", 1_000_000_000), ("*2\r\n:1\r\n*\(tooLong)\r\n", tooLong)] {
            let reader = RESPReader()
            try reader.feed(ByteBuffer(string: wire))
            let refusal = RedisError.protocolViolation("an array of \(length) elements, more than the 1048576 allowed")
            #expect(throws: refusal) { try reader.next() }
            #expect(throws: refusal) { try reader.feed(ByteBuffer(string: ":")) }
        }
        let reader = RESPReader()
        let count = 100_000
        let wire = "*\(count)\r\n" + String(repeating: ":7\r\n", count: count)
        try reader.feed(ByteBuffer(string: wire))
        #expect(try reader.next() == .array(Array(repeating: .integer(7), count: count)))
    }

    @Test func bytesThatAreNotRESPAreAnError() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect(throws: RedisError.self) { try reader.next() }
        let deep = RESPReader()
        try deep.feed(ByteBuffer(string: String(repeating: "*1\r\n", count: RESPReader.maxDepth + 1) + ":1\r\n"))
        #expect(throws: RedisError.self) { try deep.next() }
        let unterminated = RESPReader()
        try unterminated.feed(ByteBuffer(string: "$2\r\nabXY"))
        #expect(throws: RedisError.self) { try unterminated.next() }
    }

    /// Our reader reads what hiredis's reader (which it replaced) reads: random replies of every type, nested
    /// up to the depth allowed, with bulk strings of every byte value, fed whole and in random pieces.
    @Test func repliesReadAsHiredisReadsThem() throws {
        var generator = SystemRandomNumberGenerator()
        func reply(depth: Int) -> [UInt8] {
            // Arrays, the null one included, only as deep as both readers allow.
            switch Int.random(in: depth < RESPReader.maxDepth ? 0...6 : 0...4, using: &generator) {
            case 0: return Array("+OK \(Int.random(in: 0...999, using: &generator))\r\n".utf8)
            case 1: return Array("-ERR no \(Int.random(in: 0...999, using: &generator))\r\n".utf8)
            case 2: return Array(":\(Int64.random(in: .min ... .max, using: &generator))\r\n".utf8)
            case 3: return Array("$-1\r\n".utf8)
            case 5: return Array("*-1\r\n".utf8)
            case 4:
                let length = [0, 1, 2, 100, Int.random(in: 0...3_000, using: &generator)].randomElement(
                    using: &generator)!
                return Array("$\(length)\r\n".utf8)
                    + (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                    + Array("\r\n".utf8)
            default:
                let count = Int.random(in: 0...8, using: &generator)
                return Array("*\(count)\r\n".utf8) + (0..<count).flatMap { _ in reply(depth: depth + 1) }
            }
        }
        for _ in 0..<100 {
            let wire = (0..<Int.random(in: 1...4, using: &generator)).flatMap { _ in reply(depth: 0) }
            let expected = Self.hiredisRead(wire)
            let reader = RESPReader()
            var values: [RedisValue] = []
            var offset = 0
            while offset < wire.count {
                let end = min(wire.count, offset + Int.random(in: 1...(wire.count / 3 + 1), using: &generator))
                try reader.feed(ByteBuffer(bytes: wire[offset..<end]))
                while let value = try reader.next() { values.append(value) }
                offset = end
            }
            #expect(values == expected)
        }
    }

    private static func hiredisRead(_ wire: [UInt8]) -> [RedisValue] {
        let reader = redisReaderCreate()!
        defer { redisReaderFree(reader) }
        #expect(
            wire.withUnsafeBytes {
                redisReaderFeed(reader, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count)
            } == REDIS_OK)
        func value(_ pointer: UnsafeMutablePointer<redisReply>) -> RedisValue {
            let reply = pointer.pointee
            let bytes = UnsafeRawBufferPointer(start: reply.str, count: reply.len)
            switch reply.type {
            case REDIS_REPLY_STRING: return .bulkString(ByteBuffer(bytes: bytes))
            case REDIS_REPLY_STATUS: return .simpleString(String(decoding: bytes, as: UTF8.self))
            case REDIS_REPLY_ERROR: return .error(String(decoding: bytes, as: UTF8.self))
            case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
            case REDIS_REPLY_ARRAY: return .array((0..<reply.elements).map { value(reply.element[$0]!) })
            default: return .null
            }
        }
        var values: [RedisValue] = []
        while true {
            var reply: UnsafeMutableRawPointer?
            #expect(redisReaderGetReply(reader, &reply) == REDIS_OK)
            guard let reply else { return values }
            values.append(value(reply.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(reply)
        }
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
