//! The command line: `serve` and `config` for operators, `keygen`, `mint` and `torrent`
//! for the registry side (and for trying the tracker with the development keys).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::bittorrent::InfoHash;
use crate::config::{AuthMode, Config, DEFAULT_CONFIG_TOML, LogFormat};
use crate::gateway::layer::unix_now;
use crate::gateway::mint::{self, KeyAlg, TokenSpec, UDP_TOKEN_LIMIT};
use crate::server::{self, Server};
use crate::simulate;
use crate::torrent;

/// swarmgate: a BitTorrent tracker for a container registry's layer torrents.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tracker (built-in defaults unless --config names a file;
    /// SWARMGATE_SECTION__KEY variables override either). SIGHUP re-reads the file.
    Serve {
        /// A TOML configuration file; see `swarmgate config`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format, overriding `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Run the registry bridge beside an OCI registry (`[bridge]` in the same
    /// configuration file; SWARMGATE_BRIDGE__KEY variables override it):
    /// signed layer torrents, a web seed, the JWKS. SIGHUP rotates the signing key.
    Bridge {
        /// A TOML configuration file; see `swarmgate config`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format, overriding `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Run the node agent: a containerd/CRI-O registry mirror that pulls
    /// layers over BitTorrent from other agents (`[agent]` in the same
    /// configuration file; SWARMGATE_AGENT__KEY variables override it).
    /// `swarmgate agent hosts` writes containerd's hosts.toml for it.
    Agent {
        /// A TOML configuration file; see `swarmgate config`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format, overriding `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// What else to do instead of running.
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Print the default configuration, every key commented.
    Config {
        /// Print the keys as a Markdown table instead (docs/configuration.md's reference).
        #[arg(long)]
        markdown: bool,
    },
    /// Generate a signing key: writes DIR/KID.pem (private) and adds the public JWK to DIR/jwks.json.
    Keygen {
        /// Signature algorithm, spelled either way: `es256` or `ES256` (as in
        /// `auth.algorithms` and JWT headers), `eddsa` or `EdDSA`, `rs256` or `RS256`.
        #[arg(long, value_enum, ignore_case = true, default_value = "es256")]
        alg: AlgArg,
        /// Key id, carried in every token's header.
        #[arg(long)]
        kid: String,
        /// Directory for the key and the JWKS.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a token approving one infohash; prints it on stdout.
    Mint {
        /// Who signs.
        #[command(flatten)]
        signer: Signer,
        /// The torrent's v1 infohash, 40 hex characters.
        #[arg(long)]
        infohash: String,
    },
    /// Make a layer's torrent as the registry does: v1, one file, private,
    /// every announce URL carrying a fresh token for the torrent's own infohash.
    Torrent(TorrentArgs),
    /// Model a deployment pulling one layer under three handout policies
    /// (random, strict subnet-first, swarmgate's tiers with guards) through the
    /// real engine; print the table, write it as Markdown plus an SVG chart.
    Simulate(SimulateArgs),
}

/// `swarmgate agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Write containerd's registry host configuration for every registry in
    /// `agent.registries`: DIR/<registry>/hosts.toml naming the agent as the
    /// pull and resolve host, the registry as the fall-back `server`. Point
    /// containerd's `config_path` (CRI) or `ctr --hosts-dir` at DIR.
    /// Without --dir, prints them.
    Hosts {
        /// containerd's certs.d directory, e.g. /etc/containerd/certs.d.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The agent's URL as containerd reaches it; default http://<agent.listen>.
        #[arg(long)]
        url: Option<String>,
    },
}

/// The key and claims a token is minted with (`mint`, `torrent`).
#[derive(Debug, clap::Args)]
pub struct Signer {
    /// Private key PEM (PKCS#8), e.g. from `swarmgate keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Key id to put in the header (as published in the JWKS).
    #[arg(long)]
    kid: String,
    /// `iss` claim; must equal the tracker's auth.issuer.
    #[arg(long)]
    issuer: String,
    /// `aud` claim (the tracker checks it when auth.audience is set).
    #[arg(long)]
    audience: Option<String>,
    /// Lifetime (sets `exp`), e.g. 24h; none by default, as with Quay.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<std::time::Duration>,
}

impl Signer {
    /// Reads the key and mints a token for `info_hash` now; returns it with its algorithm.
    fn mint(self, info_hash: InfoHash) -> Result<(String, jsonwebtoken::Algorithm), String> {
        let pem = std::fs::read(&self.key).map_err(|e| format!("{}: {e}", self.key.display()))?;
        let (signing_key, alg) = mint::signing_key(&pem, None).map_err(|e| e.to_string())?;
        let spec = TokenSpec {
            kid: self.kid,
            issuer: self.issuer,
            audience: self.audience,
            info_hash,
            ttl: self.ttl,
        };
        let token = mint::mint(&signing_key, alg, &spec, unix_now()).map_err(|e| e.to_string())?;
        Ok((token, alg))
    }
}

/// `swarmgate torrent` flags.
#[derive(Debug, clap::Args)]
pub struct TorrentArgs {
    /// The blob (layer) to share.
    file: PathBuf,
    /// A tracker announce URL, e.g. http://tracker:6969/announce; repeat for
    /// several trackers (the first is `announce`, all go in `announce-list`).
    #[arg(long, required = true)]
    announce: Vec<String>,
    /// Who signs the announce URLs' token.
    #[command(flatten)]
    signer: Signer,
    /// A BEP 19 web seed: a URL serving this file over HTTP (the registry's
    /// blob URL), so clients can fall back to it; repeatable.
    #[arg(long)]
    webseed: Vec<String>,
    /// Bytes per piece: a power of two from 16KiB to 64MiB.
    #[arg(long, default_value = "512KiB", value_parser = parse_piece_length_arg)]
    piece_length: u64,
    /// The file name inside the torrent (default: FILE's name).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the .torrent.
    #[arg(long, short)]
    out: PathBuf,
}

fn parse_piece_length_arg(text: &str) -> Result<u64, String> {
    torrent::parse_piece_length(text).map_err(|e| e.to_string())
}

/// `swarmgate simulate` flags; defaults model 3 × 3 × 8 × 20 = 1,440 agents.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Regions.
    #[arg(long, default_value_t = 3)]
    regions: u8,
    /// Zones per region.
    #[arg(long, default_value_t = 3)]
    zones: u8,
    /// Racks (one /24 each) per zone.
    #[arg(long, default_value_t = 8)]
    racks: u8,
    /// Agents per rack.
    #[arg(long, default_value_t = 20)]
    agents: u8,
    /// Pieces in the layer.
    #[arg(long, default_value_t = 100)]
    pieces: usize,
    /// Peers each announce asks for.
    #[arg(long, default_value_t = 50)]
    numwant: usize,
    /// Neighbours an agent uploads to per round.
    #[arg(long, default_value_t = 4)]
    upload_slots: usize,
    /// Neighbours the origin uploads to per round.
    #[arg(long, default_value_t = 8)]
    origin_slots: usize,
    /// Pieces an agent can receive per round.
    #[arg(long, default_value_t = 8)]
    download_slots: usize,
    /// Connections an agent keeps per torrent (0 = no limit), opened in reply
    /// order; a capped agent asks for that many peers.
    #[arg(long, default_value_t = 20)]
    max_connections: usize,

    /// Rounds between an agent's announces.
    #[arg(long, default_value_t = 10)]
    announce_every: u32,
    /// Give up after this many rounds.
    #[arg(long, default_value_t = 1000)]
    max_rounds: u32,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// swarmgate policy: seeders guaranteed in every leecher's reply.
    #[arg(long, default_value_t = 2)]
    seeder_guard: usize,
    /// swarmgate policy: percentage of slots spilled to farther tiers.
    #[arg(long, default_value_t = 15)]
    spill_percent: u8,
    /// swarmgate policy: leechers per region that take links to other regions (0 = all).
    #[arg(long, default_value_t = 1)]
    bridgeheads: usize,
    /// swarmgate policy: past the first bridgeheads, one leecher in this many per region links regions too (0 = none). The model's clients fetch the rarest piece first, which this suits.
    #[arg(long, default_value_t = 4)]
    bridgehead_every: usize,
    /// Directory for simulation.md and simulation.svg (not written when absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `--alg` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlgArg {
    /// ECDSA P-256 (short tokens; fit UDP).
    Es256,
    /// Ed25519 (short tokens; fit UDP).
    Eddsa,
    /// RSA 2048 (Quay's choice; too long for UDP).
    Rs256,
}

impl From<AlgArg> for KeyAlg {
    fn from(alg: AlgArg) -> Self {
        match alg {
            AlgArg::Es256 => KeyAlg::Es256,
            AlgArg::Eddsa => KeyAlg::EdDsa,
            AlgArg::Rs256 => KeyAlg::Rs256,
        }
    }
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Bridge { .. } | Command::Agent { action: None, .. }
    ) {
        // The one-shot commands print and exit, like any Unix filter: a reader
        // that goes away (`swarmgate simulate | head`) ends them quietly
        // instead of making `print!` panic. `serve` keeps Rust's ignored
        // SIGPIPE, so a vanished client is an error on its socket, not a kill.
        // SAFETY: setting a signal disposition to its default has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Config { markdown } => {
            if markdown {
                print!("{}", crate::config::reference_markdown());
            } else {
                print!("{DEFAULT_CONFIG_TOML}");
            }
            ExitCode::SUCCESS
        }
        Command::Serve { config, log_format } => serve(config, log_format),
        Command::Bridge { config, log_format } => bridge(config, log_format),
        Command::Agent {
            config,
            log_format,
            action: None,
        } => agent(config, log_format),
        Command::Agent {
            config,
            action: Some(AgentAction::Hosts { dir, url }),
            ..
        } => report(agent_hosts(config.as_deref(), dir.as_deref(), url)),
        Command::Keygen { alg, kid, out } => report(keygen(alg.into(), &kid, &out)),
        Command::Mint { signer, infohash } => report(mint_token(signer, &infohash)),
        Command::Torrent(args) => report(make_torrent(args)),
        Command::Simulate(args) => report(simulate(args)),
    }
}

fn simulate(args: SimulateArgs) -> Result<(), String> {
    let settings = simulate::Settings {
        regions: args.regions,
        zones: args.zones,
        racks: args.racks,
        agents: args.agents,
        pieces: args.pieces,
        numwant: args.numwant,
        upload_slots: args.upload_slots,
        origin_slots: args.origin_slots,
        pieces_per_round: 1,
        download_slots: args.download_slots,
        max_connections: args.max_connections,
        announce_every: args.announce_every,
        max_rounds: args.max_rounds,
        seed: args.seed,
    };
    let mut outcomes = Vec::new();
    let tiers = crate::swarm::HandoutPolicy {
        tiers: true,
        seeder_guard: args.seeder_guard,
        spill_percent: args.spill_percent,
        bridgeheads: args.bridgeheads,
        bridgehead_every: args.bridgehead_every,
    };
    for (name, policy) in simulate::policies(tiers) {
        outcomes.push(simulate::run(&settings, name, policy).map_err(|e| e.to_string())?);
    }
    let table = simulate::markdown(&settings, &outcomes);
    print!("{table}");
    if let Some(dir) = args.out {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let markdown = dir.join("simulation.md");
        let chart = dir.join("simulation.svg");
        let document = format!(
            "# Handout policies in a simulated deployment\n\nProduced by `swarmgate simulate`; \
             the chart is [simulation.svg](simulation.svg).\n\n{table}\n![where the bytes went](simulation.svg)\n"
        );
        std::fs::write(&markdown, document).map_err(|e| format!("{}: {e}", markdown.display()))?;
        std::fs::write(&chart, simulate::svg(&outcomes))
            .map_err(|e| format!("{}: {e}", chart.display()))?;
        println!("\nwrote {} and {}", markdown.display(), chart.display());
    }
    Ok(())
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("swarmgate: {error}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(alg: KeyAlg, kid: &str, out: &std::path::Path) -> Result<(), String> {
    let generated = mint::generate(alg, kid).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let key_path = out.join(format!("{kid}.pem"));
    mint::write_private_key(&key_path, generated.private_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let jwks_path = out.join("jwks.json");
    mint::add_to_jwks(&jwks_path, generated.public_jwk).map_err(|e| e.to_string())?;
    println!("private key: {}", key_path.display());
    println!("public JWK added to: {}", jwks_path.display());
    Ok(())
}

fn mint_token(signer: Signer, infohash: &str) -> Result<(), String> {
    let info_hash = InfoHash::from_hex(infohash).map_err(|e| format!("--infohash: {e}"))?;
    let (token, alg) = signer.mint(info_hash)?;
    println!("{token}");
    eprintln!("{alg:?} token, {} characters", token.len());
    if token.len() > UDP_TOKEN_LIMIT {
        eprintln!(
            "warning: longer than {UDP_TOKEN_LIMIT} characters: libtorrent truncates BEP 41 URL data at 255 bytes, \
             so this token works over HTTP but not over UDP; use ES256 or EdDSA with a short kid and issuer"
        );
    }
    Ok(())
}

fn make_torrent(args: TorrentArgs) -> Result<(), String> {
    let name = match args.name {
        Some(name) => name,
        None => args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{}: not a file name", args.file.display()))?,
    };
    let file =
        std::fs::File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let info = torrent::Info::from_reader(&name, args.piece_length, std::io::BufReader::new(file))
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let info_hash = info.info_hash();
    let (token, alg) = args.signer.mint(info_hash)?;
    let meta = torrent::MetaInfo::new(
        info,
        &args.announce,
        Some(&token),
        args.webseed,
        unix_now() as i64,
    );
    std::fs::write(&args.out, meta.to_bytes())
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("{info_hash}");
    eprintln!(
        "wrote {}: {} bytes in {} pieces of {} bytes, {alg:?} token of {} characters",
        args.out.display(),
        meta.info.length,
        meta.info.pieces.len() / 20,
        meta.info.piece_length,
        token.len()
    );
    if token.len() > UDP_TOKEN_LIMIT && args.announce.iter().any(|url| url.starts_with("udp:")) {
        eprintln!(
            "warning: the token is longer than {UDP_TOKEN_LIMIT} characters, so libtorrent cuts it \
             from UDP announces; use ES256 or EdDSA with a short kid and issuer, or HTTP trackers"
        );
    }
    Ok(())
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` or else `level`.
fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (the reader of stderr went away) is
    // dropped. By default tracing reports that with eprintln!, which panics
    // on the same closed stderr: the tracker would die with its log shipper.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// What `serve` and `bridge` share before they start: the configuration
/// (file, then environment), logging, and the runtime.
fn prepare(
    path: Option<&std::path::Path>,
    log_format: Option<LogFormat>,
) -> Result<(Config, tokio::runtime::Runtime), String> {
    let config = Config::load(path, std::env::vars()).map_err(|e| e.to_string())?;
    init_logging(log_format.unwrap_or(config.log.format), &config.log.level);
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok((config, runtime))
}

fn serve(path: Option<PathBuf>, log_format: Option<LogFormat>) -> ExitCode {
    let (config, runtime) = match prepare(path.as_deref(), log_format) {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("swarmgate: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = StopSignals::register();
        let server = match server::start(config.clone()).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::FAILURE;
            }
        };
        match server.http_addr {
            Some(addr) => {
                tracing::info!(http = %addr, udp = ?server.udp_addr, admin = %server.admin_addr, auth = ?config.auth.mode,
                "swarmgate is serving; announce at http://{addr}/announce")
            }
            None => {
                tracing::info!(admin = %server.admin_addr, "swarmgate is serving (HTTP disabled)")
            }
        }
        explain_auth(&config, &server);
        until_stopped(signals, || reload(&server, path.as_deref())).await;
        tracing::info!("shutting down");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn bridge(path: Option<PathBuf>, log_format: Option<LogFormat>) -> ExitCode {
    let (config, runtime) = match prepare(path.as_deref(), log_format) {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("swarmgate: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = StopSignals::register();
        let bridge = match crate::bridge::start(&config).await {
            Ok(bridge) => bridge,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::FAILURE;
            }
        };
        until_stopped(signals, || {
            if let Err(error) = bridge.rotate() {
                tracing::warn!("SIGHUP: no rotation: {error}");
            }
            std::future::ready(())
        })
        .await;
        tracing::info!("shutting down");
        bridge.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn agent(path: Option<PathBuf>, log_format: Option<LogFormat>) -> ExitCode {
    let (config, runtime) = match prepare(path.as_deref(), log_format) {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("swarmgate: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = StopSignals::register();
        let agent = match crate::agent::start(&config).await {
            Ok(agent) => agent,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::FAILURE;
            }
        };
        until_stopped(signals, || {
            tracing::info!("SIGHUP: the agent reads its configuration at start only");
            std::future::ready(())
        })
        .await;
        tracing::info!("shutting down");
        agent.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Writes (or prints) containerd's hosts.toml for each mirrored registry.
fn agent_hosts(
    path: Option<&std::path::Path>,
    dir: Option<&std::path::Path>,
    url: Option<String>,
) -> Result<(), String> {
    let config = Config::load(path, std::env::vars()).map_err(|e| e.to_string())?;
    let url = url.unwrap_or_else(|| {
        let listen = config.agent.listen;
        let reachable = if listen.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
        } else {
            listen
        };
        format!("http://{reachable}")
    });
    for registry in &config.agent.registries {
        let text = crate::agent::hosts::hosts_toml(&registry.url, &url);
        match dir {
            Some(dir) => {
                let folder = dir.join(&registry.name);
                std::fs::create_dir_all(&folder)
                    .map_err(|e| format!("{}: {e}", folder.display()))?;
                let file = folder.join("hosts.toml");
                crate::files::write_atomically(&file, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                println!("{}", file.display());
            }
            None => println!("# {}/hosts.toml\n{text}", registry.name),
        }
    }
    Ok(())
}

/// Logs which keys are trusted and how to mint a token the tracker accepts.
fn explain_auth(config: &Config, server: &Server) {
    let auth = &config.auth;
    let Some(gateway) = &server.gateway() else {
        if auth.mode == AuthMode::Open {
            tracing::warn!("auth.mode = \"open\": any infohash may be announced without a token");
        }
        return;
    };
    let keys = gateway.keys();
    let kids = keys.kids();
    tracing::info!(
        issuer = %auth.issuer,
        keys_dir = %auth.keys_dir,
        jwks_url = %auth.jwks_url,
        ?kids,
        "auth.mode = \"jwt\": announces need a token approving their infohash"
    );
    if kids.iter().any(|kid| kid.starts_with("dev-")) {
        tracing::warn!(
            "trusting the DEVELOPMENT keys in {}/: their private halves are published with swarmgate. \
             For production set auth.keys_dir = \"\" and auth.jwks_url to your registry's JWKS",
            auth.keys_dir
        );
    }
    // The hint names a private key this host holds (ES256 first); a tracker
    // that trusts public keys or a JWKS only has none to mint with, and
    // its tokens come from whoever signs them (the bridge, the registry).
    let private_key = |kid: &str| {
        let path = format!("{}/{kid}.pem", auth.keys_dir);
        std::fs::read_to_string(&path)
            .is_ok_and(|pem| pem.contains("PRIVATE KEY"))
            .then_some(path)
    };
    let signer = std::iter::once("dev-es256")
        .chain(kids.iter().copied())
        .filter(|kid| kids.contains(kid))
        .find_map(|kid| private_key(kid).map(|path| (path, kid)));
    match signer {
        Some((key, kid)) if !auth.keys_dir.is_empty() => tracing::info!(
            "mint a token: swarmgate mint --key {key} --kid {kid} --issuer {} --infohash <40 hex chars>, \
             then announce to http://HOST:PORT/announce?jwt=<token>",
            auth.issuer
        ),
        _ => tracing::info!(
            "no private key of a trusted kid is on this host: tokens come from the issuer {} \
             (the bridge or the registry signing torrents), as the JWKS or keys_dir above publish them",
            auth.issuer
        ),
    }
}

/// The signals `serve` and `bridge` answer, registered before anything is
/// bound or logged as serving. Until a handler is registered a signal takes
/// its default action: a SIGHUP sent right after the "serving" line would
/// kill the process (or, where the parent ignores SIGHUP, as `nohup` does,
/// be lost), and a SIGTERM would skip the graceful shutdown and its
/// snapshot. `tests/cli.rs` lost a reload to that window once.
struct StopSignals {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Registers the handlers now (inside the runtime). A signal that
    /// cannot be registered is logged and then never arrives.
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let register = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(stream) => Some(stream),
                Err(error) => {
                    tracing::warn!("cannot handle {name}: {error}");
                    None
                }
            };
            Self {
                hangup: register(SignalKind::hangup(), "SIGHUP"),
                interrupt: register(SignalKind::interrupt(), "SIGINT"),
                terminate: register(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }
}

/// Waits for SIGINT or SIGTERM, running `on_hangup` on every SIGHUP
/// (`serve` reloads its configuration, `bridge` rotates its key).
#[cfg(unix)]
async fn until_stopped<F: std::future::Future<Output = ()>>(
    mut signals: StopSignals,
    mut on_hangup: impl FnMut() -> F,
) {
    // Resolves on the next delivery; never, for a signal not registered
    // (or a stream that ended, which would otherwise spin).
    async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
        if let Some(signal) = signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending().await
    }
    loop {
        tokio::select! {
            _ = next(&mut signals.interrupt) => return,
            _ = next(&mut signals.terminate) => return,
            _ = next(&mut signals.hangup) => on_hangup().await,
        }
    }
}

/// Waits for Ctrl-C (no SIGHUP off Unix).
#[cfg(not(unix))]
async fn until_stopped<F: std::future::Future<Output = ()>>(
    _signals: StopSignals,
    _on_hangup: impl FnMut() -> F,
) {
    let _ = tokio::signal::ctrl_c().await;
}

/// Re-reads the file (and the environment) and puts it in force, or keeps
/// the running configuration when anything is wrong with it.
async fn reload(server: &Server, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: started without --config, so there is no file to re-read");
        return;
    };
    let result = match Config::load(Some(path), std::env::vars()) {
        Ok(config) => server.reload(config).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    let label = match &result {
        Ok(()) => {
            tracing::info!(file = %path.display(), "configuration reloaded");
            "ok"
        }
        Err(error) => {
            tracing::error!(file = %path.display(), "configuration NOT reloaded, the running one stays: {error}");
            "error"
        }
    };
    server
        .metrics
        .counter("swarmgate_config_reloads_total", &[("result", label)])
        .increment(1);
}
