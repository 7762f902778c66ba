//! The agent's command line as the `DaemonSet` starts it: `command` and `args`, and the
//! environment the kubelet builds from `envFrom`, `env` and the downward API, turned into the
//! flags clap would read from it, then parsed by the agent's own clap definition. The
//! `ConfigMap`'s keys are matched against what the agent and the init scripts read.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fmt,
    path::Path,
};

use clap::{CommandFactory as _, Parser as _};
use hostgw_agent::cli::{Cli, Command as CliCommand, RunArgs};
use k8s_openapi::api::core::v1::Container;

use crate::{INIT_ONLY_VARIABLES, INIT_SCRIPTS, NODE_NAME, load::Manifests, text};

/// Why the `DaemonSet`'s agent command line is not one the agent accepts.
#[derive(Debug)]
enum CliRejected {
    /// The container does not run the agent binary.
    NotTheAgent(Vec<String>),
    /// A `HOSTGW_*` variable that no flag of `hostgw-agent run` reads: a typo, or a flag
    /// that is gone. The agent would start without the setting.
    UnknownVariable(String),
    /// A value the flag reading the variable refuses (clap only takes `true` or `false`).
    FlagValue { var: String, value: String },
    /// clap refused the command line.
    Clap(Box<clap::Error>),
    /// The command line parses, but to another subcommand than `run`.
    NotRun,
}

impl fmt::Display for CliRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTheAgent(command) => write!(f, "the command {command:?} is not the agent"),
            Self::UnknownVariable(var) => {
                write!(
                    f,
                    "{var} is set, but no flag of `hostgw-agent run` reads it"
                )
            }
            Self::FlagValue { var, value } => write!(f, "{var}={value:?} is not true or false"),
            Self::Clap(e) => write!(f, "hostgw-agent refuses its command line: {e}"),
            Self::NotRun => write!(f, "the command line is not `hostgw-agent run`"),
        }
    }
}

/// The environment a container starts with, as the kubelet builds it: the keys of the
/// `envFrom` `ConfigMap`s, then `env` (which wins), with `spec.nodeName` from the downward
/// API as [`NODE_NAME`].
pub fn container_env(container: &Container, manifests: &Manifests) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        assert!(
            source.secret_ref.is_none(),
            "{}: envFrom a Secret is not expected here",
            container.name
        );
        let reference = source
            .config_map_ref
            .as_ref()
            .unwrap_or_else(|| panic!("{}: envFrom without a ConfigMap", container.name));
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let cm = manifests.config_map(&reference.name);
        for (key, value) in cm.data.iter().flatten() {
            env.insert(format!("{prefix}{key}"), value.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    assert_eq!(
                        field.field_path, "spec.nodeName",
                        "{}: {} comes from a field these checks do not know",
                        container.name, var.name
                    );
                    NODE_NAME.to_owned()
                } else if let Some(key) = &from.config_map_key_ref {
                    manifests
                        .config_map(&key.name)
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&key.key))
                        .unwrap_or_else(|| panic!("{}: no key {}", key.name, key.key))
                        .clone()
                } else {
                    panic!(
                        "{}: {} comes from a source these checks do not know",
                        container.name, var.name
                    )
                }
            }
            _ => panic!("{}: {} has a value and a source", container.name, var.name),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// The `HOSTGW_*` variables of `env` that no flag of `hostgw-agent run` reads, those the init
/// scripts read ([`INIT_ONLY_VARIABLES`]) aside.
fn unknown_hostgw_variables(env: &BTreeMap<String, String>) -> Vec<String> {
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("hostgw-agent has a run subcommand");
    env.keys()
        .filter(|var| var.starts_with("HOSTGW_"))
        .filter(|var| !INIT_ONLY_VARIABLES.contains(&var.as_str()))
        .filter(|var| {
            !run.get_arguments()
                .any(|a| a.get_env() == Some(OsStr::new(var)))
        })
        .cloned()
        .collect()
}

/// The agent's command line as the container starts it: `command` and `args`, then each
/// variable of `env` that a flag of `hostgw-agent run` reads, as that flag, unless the
/// command line gives the flag already (clap reads a flag's variable only then). This mirrors
/// clap's reading of the environment without touching this process's.
fn agent_argv(
    container: &Container,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, CliRejected> {
    let command = container.command.clone().unwrap_or_default();
    let runs_agent = command
        .first()
        .is_some_and(|c| Path::new(c).file_name() == Some(OsStr::new("hostgw-agent")));
    if !runs_agent {
        return Err(CliRejected::NotTheAgent(command));
    }
    let mut argv: Vec<String> = command
        .into_iter()
        .chain(container.args.iter().flatten().cloned())
        .collect();
    if let Some(var) = unknown_hostgw_variables(env).into_iter().next() {
        return Err(CliRejected::UnknownVariable(var));
    }
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("hostgw-agent has a run subcommand");
    for (var, value) in env {
        let Some(arg) = run
            .get_arguments()
            .find(|a| a.get_env() == Some(OsStr::new(var)))
        else {
            continue;
        };
        let long = arg
            .get_long()
            .expect("every option of `hostgw-agent run` is a long one");
        let flag = format!("--{long}");
        if argv
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        if arg.get_action().takes_values() {
            argv.push(format!("{flag}={value}"));
        } else {
            let accepted = arg
                .get_value_parser()
                .possible_values()
                .is_some_and(|mut p| p.any(|p| p.matches(value, false)));
            if !accepted {
                return Err(CliRejected::FlagValue {
                    var: var.clone(),
                    value: value.clone(),
                });
            }
            if value == "true" {
                argv.push(flag);
            }
        }
    }
    Ok(argv)
}

/// Parses the container's command line with the agent's own clap definition.
fn agent_run_args(
    container: &Container,
    env: &BTreeMap<String, String>,
) -> Result<RunArgs, CliRejected> {
    let argv = agent_argv(container, env)?;
    let cli = Cli::try_parse_from(&argv).map_err(|e| CliRejected::Clap(Box::new(e)))?;
    #[allow(
        irrefutable_let_patterns,
        reason = "`run` is the only subcommand today; inspection subcommands are planned"
    )]
    let CliCommand::Run(args) = cli.command else {
        return Err(CliRejected::NotRun);
    };
    Ok(args)
}

/// The agent's parsed command line, or a panic that says what is wrong with it.
pub fn agent_args(manifests: &Manifests) -> RunArgs {
    let agent = manifests.agent();
    agent_run_args(agent, &container_env(agent, manifests)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn agent_command_line_and_environment_are_ones_the_agent_accepts() {
    let manifests = Manifests::load();
    let args = agent_args(&manifests);
    assert_eq!(
        args.node_name.as_deref(),
        Some(NODE_NAME),
        "--node-name from spec.nodeName"
    );
    assert_eq!(
        args.nodes_file, None,
        "in a pod the nodes come from the Kubernetes API, not a file"
    );
    let config = hostgw_agent::Config::try_from(args)
        .unwrap_or_else(|e| panic!("the agent's configuration does not validate: {e}"));
    assert_eq!(config.node_name, NODE_NAME);

    // Every HOSTGW_* variable any container gets is one the agent reads.
    for container in manifests.all_containers() {
        let env = container_env(container, &manifests);
        let unknown = unknown_hostgw_variables(&env);
        assert!(
            unknown.is_empty(),
            "{}: no flag of `hostgw-agent run` reads {unknown:?}",
            container.name
        );
    }

    // The log filter reaches the agent, and tracing accepts it.
    let env = container_env(manifests.agent(), &manifests);
    let filter = env.get("RUST_LOG").expect("RUST_LOG reaches the agent");
    tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|e| panic!("RUST_LOG={filter:?} is not a valid filter: {e}"));

    // The ConfigMap's other keys are read by someone: RUST_LOG by the agent, the rest by the
    // init containers' scripts.
    let script_variables: BTreeSet<&str> = INIT_SCRIPTS
        .iter()
        .flat_map(|(_, key)| text::shell_variables(manifests.script(key)))
        .collect();
    for key in manifests
        .config_map("hostgw-config")
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
    {
        let read = key.starts_with("HOSTGW_")
            || key == "RUST_LOG"
            || script_variables.contains(key.as_str());
        assert!(read, "hostgw-config sets {key}, which nothing reads");
    }

    // The variables exempt from the check above are the scripts', and the agent's flags do
    // not read them.
    let run = Cli::command();
    let run = run.find_subcommand("run").expect("a run subcommand");
    for var in INIT_ONLY_VARIABLES {
        assert!(script_variables.contains(var), "no init script reads {var}");
        assert!(
            !run.get_arguments()
                .any(|a| a.get_env() == Some(OsStr::new(var))),
            "a flag of `hostgw-agent run` reads {var}: it is not the init scripts' alone"
        );
    }
}

#[test]
fn cli_check_rejects_what_the_agent_would() {
    let manifests = Manifests::load();
    let agent = manifests.agent();
    let env = container_env(agent, &manifests);
    assert!(
        agent_run_args(agent, &env).is_ok(),
        "the DaemonSet's own command line"
    );

    let mut bad_flag = agent.clone();
    bad_flag
        .args
        .get_or_insert_with(Vec::new)
        .push("--no-such-flag".to_owned());
    assert!(matches!(
        agent_run_args(&bad_flag, &env),
        Err(CliRejected::Clap(_))
    ));

    let mut typo = env.clone();
    typo.insert("HOSTGW_UPLNK".to_owned(), "eth1".to_owned());
    assert!(matches!(
        agent_run_args(agent, &typo),
        Err(CliRejected::UnknownVariable(v)) if v == "HOSTGW_UPLNK"
    ));

    let mut yes = env.clone();
    yes.insert("HOSTGW_KEEP_DATAPLANE".to_owned(), "yes".to_owned());
    assert!(matches!(
        agent_run_args(agent, &yes),
        Err(CliRejected::FlagValue { .. })
    ));

    let mut soon = env.clone();
    soon.insert("HOSTGW_RESYNC_SECONDS".to_owned(), "soon".to_owned());
    assert!(matches!(
        agent_run_args(agent, &soon),
        Err(CliRejected::Clap(_))
    ));

    // Without the uplink (the one required setting) clap refuses.
    let mut no_uplink = env.clone();
    no_uplink.remove("HOSTGW_UPLINK");
    if std::env::var_os("HOSTGW_UPLINK").is_none() {
        assert!(matches!(
            agent_run_args(agent, &no_uplink),
            Err(CliRejected::Clap(_))
        ));
    } else {
        eprintln!("skipping the missing-uplink check: HOSTGW_UPLINK is set in this environment");
    }

    // The command line wins over the environment, as in clap.
    let mut overridden = env.clone();
    overridden.insert("HOSTGW_METRICS_ADDR".to_owned(), "127.0.0.1:1".to_owned());
    let args = agent_run_args(agent, &overridden).expect("the command line wins");
    assert_eq!(args.metrics_addr, agent_args(&manifests).metrics_addr);

    let mut shell = agent.clone();
    shell.command = Some(vec!["/bin/sh".to_owned()]);
    assert!(matches!(
        agent_run_args(&shell, &env),
        Err(CliRejected::NotTheAgent(_))
    ));
}
