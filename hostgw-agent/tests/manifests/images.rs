//! The image: every container runs the agent's, the kustomization's `images` entry names it,
//! and the `Dockerfile` builds the agent into it where the `DaemonSet` runs it, with the tools
//! the init scripts call.

use std::collections::BTreeSet;

use crate::{deploy_dir, load::Manifests, read, text};

/// The commands of a stage's `RUN` instructions, each as its words.
fn run_commands<'a>(stage: &[&'a text::Instruction]) -> Vec<Vec<&'a str>> {
    stage
        .iter()
        .filter(|i| i.keyword == "RUN")
        .flat_map(|i| i.commands())
        .collect()
}

#[test]
fn images_agree_with_the_kustomization_and_the_dockerfile() {
    let manifests = Manifests::load();
    let images: BTreeSet<&str> = manifests
        .all_containers()
        .map(|c| c.image.as_deref().expect("an image"))
        .collect();
    assert_eq!(
        images.len(),
        1,
        "every container runs the agent's image: {images:?}"
    );
    let image = images.first().copied().expect("one image");
    let (repository, tag) = image.rsplit_once(':').expect("the image has a tag");
    for entry in &manifests.kustomization.images {
        assert_eq!(
            entry.name, repository,
            "kustomization.yaml images[] applies to the image"
        );
        assert_eq!(
            entry.new_name, None,
            "the base keeps the name; overlays rename"
        );
        assert_eq!(
            entry.new_tag.as_deref(),
            Some(tag),
            "the base's tag is the DaemonSet's"
        );
    }

    let instructions = text::dockerfile_instructions(&read(&deploy_dir().join("Dockerfile")));
    let mut stages: Vec<Vec<&text::Instruction>> = Vec::new();
    for instruction in &instructions {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(instruction);
    }
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    assert_eq!(
        stages[0][0].words()[1..],
        ["AS", "builder"],
        "the first stage builds"
    );
    let builder = run_commands(&stages[0]);
    for step in [
        ["cargo", "xtask", "build-ebpf"].as_slice(),
        ["cargo", "build", "--release"].as_slice(),
    ] {
        assert!(
            builder.iter().any(|c| c.starts_with(step)),
            "the builder runs `{}`: {builder:?}",
            step.join(" ")
        );
    }
    let runtime = stages.last().expect("a runtime stage");
    let binary = &manifests.agent().command.as_ref().expect("a command")[0];
    let copies: Vec<Vec<&str>> = runtime
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| i.words())
        .collect();
    assert!(
        copies.contains(&vec![
            "--from=builder",
            "/out/hostgw-agent",
            binary.as_str()
        ]),
        "the image holds the agent at {binary}, where the DaemonSet runs it: {copies:?}"
    );
    let entrypoint = runtime
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("the runtime stage has an ENTRYPOINT");
    let entrypoint: Vec<String> =
        serde_json::from_str(&entrypoint.args).expect("the ENTRYPOINT is in exec form");
    assert_eq!(entrypoint, std::slice::from_ref(binary));
    // The init scripts' tools are in the image.
    let installed: BTreeSet<&str> = run_commands(runtime)
        .iter()
        .filter_map(|c| c.strip_prefix(["apt-get", "install"].as_slice()))
        .flatten()
        .copied()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert!(!installed.is_empty(), "the runtime stage installs packages");
    let script_words = text::shell_words(manifests.script("install-cni.sh"));
    for (tool, package) in [("curl", "curl"), ("ip", "iproute2")] {
        assert!(
            script_words.contains(tool),
            "install-cni does not call {tool}"
        );
        assert!(
            installed.contains(package),
            "the image lacks {package} for install-cni: {installed:?}"
        );
    }
    let ignore = read(&deploy_dir().join("Dockerfile.dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
}
