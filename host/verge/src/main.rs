//! `verge`: the daemon (`verge run`) and the commands that manage it.
//!
//! The commands talk to a running daemon over the management socket in its data directory
//! (`--data-dir`, `VERGE_DATA_DIR`, the configuration's `data_dir`, or `./.verge`), except
//! `verge route test` and `verge push`, which need no daemon.
//!
//! Exit codes: 0 success; 1 the operation failed (a refused or failed deployment, a method that
//! got no answer, a monitor that timed out before `--count` messages); 2 bad usage or input that
//! does not parse (a route, a message file).

mod cli;
mod config;
mod containers;
mod daemon;
mod identities;
mod oci;
mod security;
mod twins;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Verge: an edge runtime for IoT devices, in the family of Azure IoT Edge.
#[derive(Parser, Debug)]
#[command(name = "verge", version, about, propagate_version = true)]
struct Cli {
    /// The daemon's data directory (its state and management socket).
    #[arg(long, short = 'd', global = true, env = "VERGE_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// The daemon's configuration file (TOML).
    #[arg(long, short = 'c', global = true, env = "VERGE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground.
    Run {
        /// A deployment manifest to apply at start (else the last one applied, if any).
        #[arg(long)]
        deployment: Option<PathBuf>,
    },
    /// Apply a deployment manifest to the running daemon.
    Deploy {
        /// The manifest (IoT Edge's `modulesContent` JSON).
        file: PathBuf,
        /// Deploy to this child edge device (through its twins) instead of this device.
        #[arg(long)]
        device: Option<String>,
    },
    /// List the modules and their status.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a module's log.
    Logs {
        /// The module.
        module: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Keep following new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Prefix each line with its time.
        #[arg(long, short = 't')]
        timestamps: bool,
    },
    /// Restart a module.
    Restart {
        /// The module.
        module: String,
    },
    /// Print messages leaving for `$upstream`, one JSON line each.
    Monitor {
        /// Stop after N messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after S seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Start with the messages already waiting for upstream.
        #[arg(long)]
        queued: bool,
    },
    /// Test routes without a daemon.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Call a direct method: `verge invoke MODULE METHOD [PAYLOAD]` for a module of this device,
    /// `verge invoke --device D [--module M] METHOD [PAYLOAD]` for a leaf device or a client
    /// behind a child edge device.
    Invoke {
        /// `[MODULE] METHOD [PAYLOAD]` (no MODULE with --device); the payload is JSON, `{}` if
        /// missing.
        #[arg(num_args = 1..=3, required = true)]
        args: Vec<String>,
        /// The device (a leaf device, a child edge device or one behind it).
        #[arg(long)]
        device: Option<String>,
        /// A module of --device.
        #[arg(long, requires = "device")]
        module: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Send a cloud-to-device message to a device (a leaf device, or one behind a child edge
    /// device); it waits in the device's queue until the device takes it.
    Send {
        /// The device.
        #[arg(long)]
        device: String,
        /// The body (text).
        body: String,
        /// An application property, `NAME=VALUE` (repeatable).
        #[arg(long = "property", value_name = "NAME=VALUE")]
        properties: Vec<String>,
        /// The message id.
        #[arg(long)]
        message_id: Option<String>,
    },
    /// Show twins.
    Twin {
        #[command(subcommand)]
        command: TwinCommand,
    },
    /// Manage the identities of leaf devices and external modules.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Print the edge CA certificate (PEM) that MQTT clients trust.
    TrustBundle,
    /// Print the hub's and the MQTT front's counters (JSON).
    Stats,
    /// Publish a wasm component to an OCI registry as a CNCF wasm OCI artifact (no daemon
    /// needed); prints REFERENCE@DIGEST, which a wasm module's `settings.image` may name.
    Push {
        /// The component (a WebAssembly component, e.g. built for wasm32-wasip2).
        file: PathBuf,
        /// Where: `registry/repository[:tag]` (`latest` without a tag).
        reference: String,
        /// The registry user.
        #[arg(long)]
        username: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, requires = "username", conflicts_with = "password")]
        password_stdin: bool,
        /// The password (other users may see it in the process list: prefer --password-stdin).
        #[arg(long, requires = "username")]
        password: Option<String>,
        /// Reach the registry over plain HTTP (loopback registries, and the configuration's
        /// `[containerd] plain_http`, always are).
        #[arg(long)]
        plain_http: bool,
    },
    /// Compile a component for the daemon's engine (the daemon runs this in a child process).
    #[command(hide = true)]
    CompileComponent {
        #[arg(long)]
        max_modules: u32,
        #[arg(long)]
        max_memory_bytes: u64,
        #[arg(long, action = clap::ArgAction::Set)]
        pooling: bool,
        input: PathBuf,
        output: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum RouteCommand {
    /// Evaluate ROUTE against a message: prints true, false or undefined.
    Test {
        /// `[SELECT *] FROM … [WHERE …] INTO …`
        route: String,
        /// The message: `{"properties":{…},"systemProperties":{…},"body":…}`.
        #[arg(long)]
        message: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// Register a leaf device, an external module or a child edge device; prints its connection
    /// string (SAS) once.
    Add {
        /// `device` (a leaf device), `module` (a module of this device run elsewhere) or
        /// `edge-device` (a child edge device: a Verge whose `[upstream]` is this one).
        #[arg(value_parser = ["device", "module", "edge-device"])]
        kind: String,
        /// Its id.
        name: String,
        /// Authenticate with a client certificate of this SHA-256 or SHA-1 thumbprint.
        #[arg(long)]
        thumbprint: Option<String>,
        /// The secondary thumbprint.
        #[arg(long, requires = "thumbprint")]
        secondary_thumbprint: Option<String>,
        /// Authenticate with a certificate issued by the edge CA, CN = the device id.
        #[arg(long, conflicts_with = "thumbprint")]
        ca: bool,
    },
    /// List identities.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a leaf device (`NAME`) or an external module (`DEVICE/MODULE`) and its keys.
    Remove {
        /// `device` or `device/module`.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TwinCommand {
    /// Print a twin's desired and reported properties.
    Show {
        /// A module id, `$edgeAgent`, `$edgeHub`, or `devices/ID` for a leaf device (not with
        /// --device).
        #[arg(required_unless_present = "device", conflicts_with = "device")]
        id: Option<String>,
        /// A device's twin (a leaf device, a child edge device or one behind it)...
        #[arg(long)]
        device: Option<String>,
        /// ...or the twin of its module M.
        #[arg(long, requires = "device")]
        module: Option<String>,
    },
    /// Merge a JSON patch into a twin's desired properties (as the cloud would); prints the new
    /// desired version. The twin's module or device gets the patch.
    Update {
        /// A module id, or `devices/ID` for a leaf device.
        id: String,
        /// The patch: a JSON object (`null` deletes a key).
        patch: String,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run { .. });
    init_tracing(if daemon { "info" } else { "warn" });
    if let Command::Route {
        command: RouteCommand::Test { route, message },
    } = &cli.command
    {
        return cli::route_test(route, message);
    }
    if let Command::CompileComponent {
        max_modules,
        max_memory_bytes,
        pooling,
        input,
        output,
    } = &cli.command
    {
        let settings = verge_runtime_wasm::EngineSettings {
            max_modules: *max_modules,
            max_memory_bytes: *max_memory_bytes,
            pooling: *pooling,
        };
        return match verge_runtime_wasm::compile_file(&settings, input, output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ verge_runtime::RuntimeError::Invalid(_)) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match &cli.config {
        Some(path) => match config::Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
        None => config::Config::default(),
    };
    let data_dir = config.data_dir(cli.data_dir.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = || verge_mgmt::client::Client::new(&data_dir.join(verge_mgmt::SOCKET));
        match cli.command {
            Command::Run { deployment } => daemon::run(config, data_dir.clone(), deployment)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Deploy { file, device } => {
                cli::deploy(&client(), &file, device.as_deref()).await
            }
            Command::List { json } => cli::list(&client(), json).await,
            Command::Logs {
                module,
                tail,
                follow,
                timestamps,
            } => cli::logs(&client(), &module, tail, follow, timestamps).await,
            Command::Restart { module } => cli::restart(&client(), &module).await,
            Command::Monitor {
                count,
                timeout,
                queued,
            } => cli::monitor(&client(), count, timeout, queued).await,
            Command::Invoke {
                args,
                device,
                module,
                timeout,
            } => {
                cli::invoke(
                    &client(),
                    device.as_deref(),
                    module.as_deref(),
                    &args,
                    timeout,
                )
                .await
            }
            Command::Send {
                device,
                body,
                properties,
                message_id,
            } => cli::send(&client(), &device, &body, &properties, message_id).await,
            Command::Twin {
                command: TwinCommand::Show { id, device, module },
            } => {
                let id = match (id, device, module) {
                    (Some(id), _, _) => id,
                    (None, Some(d), Some(m)) => format!("devices/{d}/modules/{m}"),
                    (None, Some(d), None) => format!("devices/{d}"),
                    (None, None, _) => unreachable!("clap requires an id or --device"),
                };
                cli::twin_show(&client(), &id).await
            }
            Command::Twin {
                command: TwinCommand::Update { id, patch },
            } => cli::twin_update(&client(), &id, &patch).await,
            Command::Identity { command } => match command {
                IdentityCommand::Add {
                    kind,
                    name,
                    thumbprint,
                    secondary_thumbprint,
                    ca,
                } => {
                    let request = verge_mgmt::api::NewIdentity {
                        kind,
                        id: name,
                        thumbprint,
                        secondary_thumbprint,
                        ca,
                    };
                    cli::identity_add(&client(), &request).await
                }
                IdentityCommand::List { json } => cli::identity_list(&client(), json).await,
                IdentityCommand::Remove { id } => cli::identity_remove(&client(), &id).await,
            },
            Command::TrustBundle => cli::trust_bundle(&client()).await,
            Command::Stats => cli::stats(&client()).await,
            Command::Push {
                file,
                reference,
                username,
                password_stdin,
                password,
                plain_http,
            } => {
                let auth = oci::PushAuth {
                    username,
                    password,
                    password_stdin,
                };
                oci::push(
                    &file,
                    &reference,
                    auth,
                    plain_http,
                    &config.containerd.plain_http,
                )
                .await
            }
            Command::Route { .. } | Command::CompileComponent { .. } => Ok(ExitCode::from(2)),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
