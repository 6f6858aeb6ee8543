//! The `switchboard` binary: CLI, configuration and wiring of the media plane, signaling,
//! session store and HTTP API.

mod admin_cli;
mod cluster;
mod config;
mod control;
mod delivery;
mod http;
mod loadtest;
mod server;
mod store;
mod turn;

use std::process::ExitCode;

use clap::Parser;
use switchboard_signaling::token::{self, Claims};
use switchboard_signaling::NameRules;

use config::{Cli, Command, TokenCommand};

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process (reqwest and sqlx use rustls): aws-lc-rs,
    // the library str0m and jsonwebtoken already use. Installing twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => match config::resolve(&args, &env_var) {
            Ok(settings) => server::serve(settings),
            Err(e) => Err(anyhow::anyhow!("invalid configuration: {e}")),
        },
        Command::Token(TokenCommand::Create(args)) => create_token(&args),
        Command::Migrate(args) => migrate(&args),
        Command::Rooms(command) => admin_cli::rooms(command),
        Command::Sessions(command) => admin_cli::sessions(command),
        Command::Drain(args) => admin_cli::drain(args),
        Command::Loadtest(args) => loadtest::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn create_token(args: &config::TokenCreateArgs) -> anyhow::Result<()> {
    let settings = config::resolve_token(args, &env_var)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    // The rule the server applies to the token, so a token it would refuse is never made.
    let names = NameRules {
        max_room_name_bytes: settings.limits.max_room_name_bytes,
        max_identity_bytes: settings.limits.max_participant_identity_bytes,
    };
    names.check_room(&args.room)?;
    names.check_identity(&args.identity)?;
    let mut claims = Claims::for_join(
        settings.api_key.clone(),
        args.identity.clone(),
        args.room.clone(),
        args.ttl,
    );
    claims.name = args.name.clone();
    claims.metadata = args.metadata.clone();
    if args.no_publish {
        claims.video.can_publish = Some(false);
    }
    if args.no_subscribe {
        claims.video.can_subscribe = Some(false);
    }
    if args.admin {
        claims.video.room_admin = true;
        claims.video.room_create = true;
        claims.video.room_list = true;
    }
    let jwt = token::issue(&settings.api_key, &settings.api_secret, &claims)?;
    println!("{jwt}");
    eprintln!("url: {}", settings.ws_url);
    Ok(())
}

fn migrate(args: &config::MigrateArgs) -> anyhow::Result<()> {
    let settings = config::resolve_migrate(args, &env_var)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        server::prepare_data_dir(&settings.database_url, &settings.data_dir)?;
        store::migrate(&settings.database_url).await?;
        eprintln!("migrations applied");
        Ok(())
    })
}
