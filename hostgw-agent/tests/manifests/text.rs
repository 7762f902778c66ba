//! The files the checks read that are not Kubernetes objects, taken apart into the pieces the
//! checks compare: the init scripts' variable references and defaults, the capabilities that
//! `# CAP_…:` comments justify, and the `Dockerfile`'s instructions. Each parser is small and
//! knows only the shapes these files use.

use std::collections::{BTreeMap, BTreeSet};

/// Whether `c` may continue a shell variable name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The variables `script` reads: every `$NAME` and `${NAME…}`.
pub fn shell_variables(script: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    for (at, _) in script.match_indices('$') {
        let rest = &script[at + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let len = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
        let name = &rest[..len];
        if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            names.insert(name);
        }
    }
    names
}

/// The defaults `script` gives its variables, one `: "${NAME:=default}"` line each.
pub fn shell_defaults(script: &str) -> BTreeMap<&str, &str> {
    script
        .lines()
        .filter_map(|l| l.trim().strip_prefix(": \"${")?.strip_suffix("}\""))
        .filter_map(|assignment| assignment.split_once(":="))
        .collect()
}

/// The words of `script` (split at blanks, quotes, `$(`, `|`, `;`, `&`), so that a command's
/// name is one of them.
pub fn shell_words(script: &str) -> BTreeSet<&str> {
    script
        .split(|c: char| c.is_whitespace() || "\"'()|;&$`".contains(c))
        .filter(|w| !w.is_empty())
        .collect()
}

/// The capabilities that comment lines of `yaml` justify: each `CAP_NAME:` in a line whose
/// first non-blank character is `#`.
pub fn yaml_comment_capabilities(yaml: &str) -> BTreeSet<&str> {
    let mut caps = BTreeSet::new();
    for comment in yaml
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
    {
        for (at, _) in comment.match_indices("CAP_") {
            let rest = &comment[at + "CAP_".len()..];
            let len = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .unwrap_or(rest.len());
            if len > 0 && rest[len..].starts_with(':') {
                caps.insert(&rest[..len]);
            }
        }
    }
    caps
}

/// One `Dockerfile` instruction: its keyword and its arguments, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

impl Instruction {
    /// The arguments split at blanks.
    pub fn words(&self) -> Vec<&str> {
        self.args.split_whitespace().collect()
    }

    /// A `RUN` instruction's commands (split at `&&`), each as its words, with the `RUN`
    /// flags (`--mount=…`) left out.
    pub fn commands(&self) -> Vec<Vec<&str>> {
        let script = self.args.trim_start();
        let mut rest = script;
        while let Some(flag) = rest.strip_prefix("--") {
            rest = flag
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r)
                .trim_start();
        }
        rest.split("&&")
            .map(|c| c.split_whitespace().collect())
            .collect()
    }
}

/// The instructions of `dockerfile`, comments and blank lines skipped, lines ending in `\`
/// joined with the next.
pub fn dockerfile_instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending.split_once(' ').unwrap_or((pending.as_str(), ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
        pending.clear();
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    instructions
}
