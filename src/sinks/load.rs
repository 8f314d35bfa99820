//! The `--load` sink: hands the image to the local podman or docker with `load`. Through a
//! docker-archive (the format every engine takes) of this machine's platform (a classic
//! local store holds one image per name); to Docker 25 or newer, which reads OCI archives,
//! through an OCI archive of the whole image, every platform. The Docker engine's version
//! is asked once per run.

use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::image::ImageSet;
use crate::platform::Platform;
use crate::shell::Shell;
use crate::sinks::archive;

/// `--load`, `--load=podman`, `--load=docker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// podman if it is on PATH, else docker.
    Auto,
    Podman,
    Docker,
}

impl Engine {
    pub fn parse(s: &str) -> Result<Engine> {
        match s {
            "" | "auto" => Ok(Engine::Auto),
            "podman" => Ok(Engine::Podman),
            "docker" => Ok(Engine::Docker),
            other => Err(Error::usage(format!("--load={other}: unknown engine"))
                .with_help("use --load, --load=podman or --load=docker")),
        }
    }
}

fn found(program: &str) -> bool {
    which::which(program).is_ok()
}

/// The program of `engine`: podman or docker, checked to be on PATH.
fn program(engine: Engine) -> Result<&'static str> {
    let program = match engine {
        Engine::Podman => "podman",
        Engine::Docker => "docker",
        Engine::Auto if found("podman") => "podman",
        Engine::Auto if found("docker") => "docker",
        Engine::Auto => {
            return Err(
                Error::output("--load: neither podman nor docker is on PATH").with_help(
                    "install podman or docker, or drop --load and use the written image",
                ),
            )
        }
    };
    if engine != Engine::Auto && !found(program) {
        return Err(
            Error::output(format!("--load={program}: `{program}` is not on PATH"))
                .with_help(format!("install {program}, or use --load=podman|docker")),
        );
    }
    Ok(program)
}

/// Loads the host platform's image of `set` into `engine`.
pub fn load(set: &ImageSet, engine: Engine, shell: &Shell) -> Result<()> {
    let program = program(engine)?;
    let host = Platform::host()?;
    let image = set
        .images
        .iter()
        .find(|i| i.platform == host)
        .ok_or_else(|| {
            Error::output(format!(
                "--load: the image has no {host} platform, which is what this machine runs"
            ))
            .with_help(format!("add --platform {host}"))
        })?;
    let docker = (program == "docker").then(docker_version).transpose()?;
    let oci = docker.as_ref().is_some_and(|v| v.reads_oci_archives());
    let mut file = tempfile::Builder::new()
        .prefix("microimage-load-")
        .suffix(".tar")
        .tempfile()
        .map_err(|e| Error::output(format!("creating a temporary file for --load failed: {e}")))?;
    let _registered = super::guard::Temporary::register(file.path());
    if oci {
        archive::write_oci(set, file.as_file_mut())?;
    } else {
        let single = ImageSet {
            images: vec![image.clone()],
            ..set.clone()
        };
        archive::write_docker(&single, file.as_file_mut())?;
    }
    let what = match (oci, set.images.len()) {
        (true, n) if n > 1 => format!("{n} platforms"),
        _ => host.to_string(),
    };
    let engine = match &docker {
        Some(v) => format!("docker (engine {})", v.text),
        None => program.to_string(),
    };
    shell.status("Loading", format!("{} ({what}) into {engine}", set.name));
    let out = Command::new(program)
        .args(["load", "-i"])
        .arg(file.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::output(format!("running `{program} load` failed: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if oci && said.contains("blobs/json") {
            // What an engine that does not read OCI archives says (Docker before 25).
            let version = docker.as_ref().map(|v| v.text.as_str()).unwrap_or("?");
            return Err(Error::output(format!(
                "the Docker engine ({version}) cannot load an OCI archive (it said: {said})"
            ))
            .with_help("write a docker-archive for it (`--format docker-archive`), or use Docker 25 or newer"));
        }
        return Err(Error::output(format!("`{program} load` failed: {said}"))
            .with_help(format!("check that `{program} images` works for this user")));
    }
    Ok(())
}

/// `ENGINE tag SOURCE TARGET`: a second name for an image loaded before.
pub fn tag(engine: Engine, source: &str, target: &str) -> Result<()> {
    let program = program(engine)?;
    let out = Command::new(program)
        .args(["tag", source, target])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::output(format!("running `{program} tag` failed: {e}")))?;
    if !out.status.success() {
        return Err(Error::output(format!(
            "`{program} tag {source} {target}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The Docker engine's version, as `docker version` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerVersion {
    pub text: String,
    pub major: u64,
}

impl DockerVersion {
    fn parse(text: &str) -> Option<DockerVersion> {
        let text = text.trim();
        let major = text.split(['.', '+', '-']).next()?.parse().ok()?;
        Some(DockerVersion {
            text: text.to_string(),
            major,
        })
    }

    /// Docker 25 reads OCI archives (`docker load`); 20.10 to 24 do not.
    pub fn reads_oci_archives(&self) -> bool {
        self.major >= 25
    }
}

/// The version of the Docker engine `docker` talks to, asked once per run.
fn docker_version() -> Result<DockerVersion> {
    static VERSION: std::sync::OnceLock<std::result::Result<DockerVersion, String>> =
        std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            let out = Command::new("docker")
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running `docker version` failed: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            match (out.status.success(), DockerVersion::parse(&text)) {
                (true, Some(v)) => Ok(v),
                _ => Err(format!(
                    "the Docker engine does not answer: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        })
        .clone()
        .map_err(|why| {
            Error::output(format!("--load=docker: {why}")).with_help(
                "start the Docker engine, or point DOCKER_HOST at it (`docker info` should work)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_versions_say_whether_oci_archives_load() {
        let old = DockerVersion::parse("20.10.24+dfsg1\n").unwrap();
        assert_eq!((old.major, old.reads_oci_archives()), (20, false));
        assert!(DockerVersion::parse("25.0.3").unwrap().reads_oci_archives());
        assert!(DockerVersion::parse("29.0.0-rc.1")
            .unwrap()
            .reads_oci_archives());
        assert_eq!(DockerVersion::parse("not a version"), None);
    }
}
