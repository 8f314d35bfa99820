//! The `--load` sink: hands the image to the local podman or docker with `load`, through a
//! docker-archive (the format both take). A multi-platform image loads the platform of
//! this machine (an engine's local store holds one image per name).

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

/// Loads the host platform's image of `set` into `engine`.
pub fn load(set: &ImageSet, engine: Engine, shell: &Shell) -> Result<()> {
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
    let single = ImageSet {
        images: vec![image.clone()],
        ..set.clone()
    };
    let mut file = tempfile::Builder::new()
        .prefix("microimage-load-")
        .suffix(".tar")
        .tempfile()
        .map_err(|e| Error::output(format!("creating a temporary file for --load failed: {e}")))?;
    let _registered = super::guard::Temporary::register(file.path());
    archive::write_docker(&single, file.as_file_mut())?;
    shell.status("Loading", format!("{} ({host}) into {program}", set.name));
    let out = Command::new(program)
        .args(["load", "-i"])
        .arg(file.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::output(format!("running `{program} load` failed: {e}")))?;
    if !out.status.success() {
        return Err(Error::output(format!(
            "`{program} load` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .with_help(format!("check that `{program} images` works for this user")));
    }
    Ok(())
}
