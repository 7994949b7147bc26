import ArgumentParser
import Foundation

/// `REPLICATION_SIDECAR_…` variables as fallbacks for `serve`'s flags, for containers and systemd's
/// `EnvironmentFile`: a flag given on the command line wins; otherwise its variable is added as if typed.
enum EnvironmentDefaults {
    static let prefix = "REPLICATION_SIDECAR_"

    struct Flag {
        var name: String
        var takesValue: Bool
        var repeats: Bool
    }

    /// `serve`'s flags as the parser describes them (the JSON behind `--experimental-dump-help`), so that
    /// every flag has its variable without a second list to keep in step.
    static let serveFlags: [Flag] = {
        let json = try? JSONSerialization.jsonObject(with: Data(Serve._dumpHelp().utf8)) as? [String: Any]
        let arguments = (json?["command"] as? [String: Any])?["arguments"] as? [[String: Any]] ?? []
        return arguments.compactMap { argument in
            let kind = argument["kind"] as? String
            guard kind == "option" || kind == "flag",
                let name = (argument["preferredName"] as? [String: Any])?["name"] as? String,
                !["help", "version"].contains(name)
            else { return nil }
            return Flag(name: name, takesValue: kind == "option", repeats: argument["isRepeating"] as? Bool ?? false)
        }
    }()

    static func variable(for flag: String) -> String {
        prefix + flag.uppercased().replacingOccurrences(of: "-", with: "_").replacingOccurrences(of: ".", with: "_")
    }

    /// `arguments` (without the program name) with the variables' flags added when they run `serve`, and
    /// the variables that were used.
    static func apply(to arguments: [String], environment: [String: String]) -> (
        arguments: [String], variables: [String]
    ) {
        guard arguments.first.map({ $0 == "serve" || $0.hasPrefix("-") }) ?? true,
            !arguments.contains(where: { ["--help", "-h", "--version", "--experimental-dump-help"].contains($0) })
        else { return (arguments, []) }
        var result = arguments.isEmpty ? ["serve"] : arguments
        var used: [String] = []
        for flag in serveFlags {
            let variable = variable(for: flag.name)
            guard let value = environment[variable],
                !arguments.contains(where: { $0 == "--\(flag.name)" || $0.hasPrefix("--\(flag.name)=") })
            else { continue }
            used.append(variable)
            if flag.takesValue {
                let values = flag.repeats ? value.split(separator: ",").map(String.init) : [value]
                result += values.map { "--\(flag.name)=\($0)" }
            } else {
                switch value.lowercased() {
                case "1", "true", "yes": result.append("--\(flag.name)")
                case "0", "false", "no", "": break
                default: result.append("--\(flag.name)=\(value)")  // refused by the parser, naming the flag
                }
            }
        }
        return (result, used)
    }
}
