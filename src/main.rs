//! The `lqo` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use llm_quality_observer::app::{error_chain, shutdown_signal, App};
use llm_quality_observer::auth::cli::{self as auth_cli, KeysAction};
use llm_quality_observer::config::{Config, ConfigError, LogFormat};
use llm_quality_observer::eval::backfill::{self, JudgeArgs};
use llm_quality_observer::mock_upstream::{self, MockUpstreamConfig};
use llm_quality_observer::store::Store;

// The request path allocates many short-lived buffers (JSON bodies, headers, records); mimalloc
// keeps that cheaper than glibc malloc under concurrency (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "lqo", version, about = "LLM Quality Observer: an LLM gateway that logs every call and exposes latency, tokens, cost and quality per model version to Prometheus.",
    long_about = None, after_help = "With no subcommand, `lqo` runs `serve`. Configuration: a YAML file (--config, LQO_CONFIG, or ./lqo.yaml) and environment variables DATABASE_URL, REDIS_URL, LLM_API_KEY, LLM_API_BASE_URL, OPENAI_MODEL_MAIN, LOG_LEVEL, APP_ENV, PORT. See lqo.example.yaml.")]
struct Cli {
    /// Configuration file (YAML).
    #[arg(long, global = true, env = "LQO_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone, Default)]
struct ServeArgs {
    /// Port to listen on (default 18000, or the PORT environment variable).
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Validate a configuration file and print what it resolves to (secrets hidden).
    CheckConfig {
        /// The file to check; defaults to --config / LQO_CONFIG / ./lqo.yaml.
        file: Option<PathBuf>,
    },
    /// Judge stored records: queue the sampled ones of a time range for the LLM judge and judge
    /// them (alongside any running gateways), then exit.
    Judge(JudgeArgs),
    /// Manage client API keys (stored as SHA-256 hashes in the configured database).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Serve an OpenAI-compatible fake model (Chat Completions and Responses, streaming) for
    /// demos, tests and benchmarks.
    MockUpstream(MockUpstreamConfig),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key and print it once on stdout (only its hash is stored).
    Create {
        /// Unique name: letters, digits and . _ - (recorded with every call the key makes).
        #[arg(long)]
        name: String,
        /// Comma-separated: chat, feedback, logs:read, admin.
        #[arg(long, default_value = "chat")]
        scopes: String,
        /// When the key stops working: 90d, 12h, 2w, 2030-01-01 or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys with their prefix, scopes and state (never the keys themselves).
    List,
    /// Revoke a key by name.
    Revoke {
        /// The key's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("error: {}", error_chain(e));
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration; an invalid one prints one line per problem and exits with 2.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        match e {
            ConfigError::Invalid(problems) => {
                eprintln!("invalid configuration:");
                for p in problems {
                    eprintln!("  {p}");
                }
            }
            other => eprintln!("error: {other}"),
        }
        ExitCode::from(2)
    })
}

fn init_tracing(cfg: &Config) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let (targets, env_filter) = log_filter(&cfg.logging.level);
    // Colour codes only for a terminal: in a file or a log collector they are noise, and
    // formatting them for every request's span was ~1 % of the gateway's instructions per call.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let fmt = match cfg.logging.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt
            .fmt_fields(llm_quality_observer::logfmt::PlainFields)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(targets)
        .with(env_filter)
        .try_init();
}

/// The filter for `logging.level`: a plain list of `target=level` directives (the usual
/// `info`, `lqo=debug,warn`) is a static `Targets` filter; span and field directives
/// (`[request]=debug`) need an `EnvFilter`, which looks the current span up on every enter and
/// exit of every request's span — ~2 % of the gateway's instructions per call. A level that is
/// neither falls back to `info`, as before.
fn log_filter(
    level: &str,
) -> (
    Option<tracing_subscriber::filter::Targets>,
    Option<tracing_subscriber::EnvFilter>,
) {
    // `Targets` would read `[span]` as a target name: such levels go to `EnvFilter`.
    let plain = !level.contains(['[', '{']);
    match level.parse::<tracing_subscriber::filter::Targets>() {
        Ok(targets) if plain => (Some(targets), None),
        _ => (
            None,
            Some(
                tracing_subscriber::EnvFilter::try_new(level)
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            ),
        ),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::MockUpstream(cfg)) => {
            let _ = tracing_subscriber::fmt().with_target(false).try_init();
            let (addr, task) = mock_upstream::spawn(cfg)
                .await
                .context("starting the mock upstream")?;
            println!("mock upstream listening on http://{addr}/v1");
            tokio::select! {
                r = task => r.context("mock upstream stopped")?,
                _ = shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::CheckConfig { file }) => {
            let path = file.or(cli.config);
            let cfg = match load_config(path.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            println!("# configuration OK");
            print!("{}", cfg.to_redacted_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Migrate) => {
            let cfg = match load_config(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            init_tracing(&cfg);
            let store = Store::connect(&cfg.database.url, cfg.database.max_connections).await?;
            store.migrate().await?;
            println!("migrations applied to the {} database", store.backend());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Judge(args)) => {
            let cfg = match load_config(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            init_tracing(&cfg);
            match backfill::command(cfg.eval_settings(), &cfg.database, args, shutdown_signal())
                .await
            {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Some(Command::Keys(cmd)) => {
            let cfg = match load_config(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let action = match cmd {
                KeysCommand::Create {
                    name,
                    scopes,
                    expires,
                } => KeysAction::Create {
                    name,
                    scopes,
                    expires,
                },
                KeysCommand::List => KeysAction::List,
                KeysCommand::Revoke { name } => KeysAction::Revoke { name },
            };
            match auth_cli::run(&cfg.database, &cfg.auth, action).await {
                Ok(out) => {
                    print!("{}", out.stdout);
                    eprint!("{}", out.stderr);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Some(Command::Serve(args)) => serve(cli.config, args).await,
        None => serve(cli.config, cli.serve).await,
    }
}

async fn serve(config: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match load_config(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Some(p) = args.port {
        cfg.server.port = p;
    }
    init_tracing(&cfg);
    let addr = format!("{}:{}", cfg.server.host, cfg.server.port);
    let providers: Vec<String> = cfg
        .models
        .iter()
        .map(|(name, m)| format!("{name} → {}", m.provider))
        .collect();
    let app = App::build(cfg).await.context("starting the gateway")?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        %addr,
        database = app.state.store.backend(),
        default_model = app.state.gateway.default_model(),
        models = ?providers,
        "LLM Quality Observer listening: POST /chat, POST /v1/chat/completions, GET /metrics, GET /docs"
    );
    if app
        .state
        .config
        .providers
        .values()
        .all(|p| p.kind == llm_quality_observer::config::ProviderKind::Mock)
    {
        tracing::info!("no LLM_API_KEY set: answers come from the built-in mock model");
    }
    // Bounded: with the database down at start, counting the keys would wait for a connection.
    let said = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.state.auth.log_startup_state(),
    );
    if said.await.is_err() {
        tracing::warn!("could not read the key table at start (the database does not answer yet)");
    }
    app.serve(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn plain_levels_get_the_static_filter_and_span_directives_the_env_filter() {
        for plain in ["info", "debug", "warn,llm_quality_observer=debug", "off"] {
            let (targets, env) = log_filter(plain);
            assert!(targets.is_some() && env.is_none(), "{plain}");
        }
        for dynamic in ["warn,[request]=debug", "info,[request{path=/chat}]=trace"] {
            let (targets, env) = log_filter(dynamic);
            assert!(targets.is_none() && env.is_some(), "{dynamic}");
        }
        // Nonsense still starts the gateway, at info.
        let (targets, env) = log_filter("loud=[");
        assert!(targets.is_none());
        assert_eq!(env.unwrap().to_string(), "info");
    }
}
