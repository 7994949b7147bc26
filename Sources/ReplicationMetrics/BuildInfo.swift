/// What `--version` prints and `replication_sidecar_build_info` exports.
public enum BuildInfo {
    public static let version = "0.1.0"
    /// The git commit being built (`-dirty` with uncommitted changes), or `unknown` outside a git checkout.
    public static let revision = generatedRevision
}
