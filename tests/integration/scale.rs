//! Large binaries: a ≥ 500 MB static binary (a small real one with half a gigabyte of
//! mixed data appended, as `include_bytes!` of assets or model weights makes them) is
//! packed into a layout, an archive and a registry with memory that does not grow with
//! it, reproducibly, readable by skopeo and umoci, and a run interrupted while it writes
//! such a layer leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::registry::{pusher, Registry, Setup};

/// The ceiling for the tool's peak resident memory, whatever the binary's size.
const MEMORY_CEILING_KB: u64 = 64 * 1024;

/// `hello` with `mib` MiB appended: 1 MiB of noise (incompressible, as media or weights
/// are) and 1 MiB of text-like data (compressible) in turn, from a fixed seed.
fn big_binary(dir: &Path, mib: usize) -> PathBuf {
    let c = fixture("hello");
    let bin = cargo_build_fixture(c.path(), "hello");
    let path = dir.join("hello");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    out.write_all(&std::fs::read(&bin).unwrap()).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        for (j, word) in block.chunks_exact_mut(8).enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 2 == 0 {
                word.copy_from_slice(&x.to_le_bytes());
            } else {
                let text = b"weights ";
                word.copy_from_slice(text);
                word[(j + i) % 8] = b'a' + (x % 26) as u8;
            }
        }
        out.write_all(&block).unwrap();
    }
    out.into_inner().unwrap().sync_all().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `cmd` under `/usr/bin/time`; returns the run and the peak resident memory in KiB.
fn measured(cmd: &Command) -> (Run, u64) {
    let report = tmp();
    let report_file = report.path().join("time");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let out = run(&mut timed);
    let text = std::fs::read_to_string(&report_file).unwrap_or_default();
    let kb = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {text:?}"));
    (out, kb)
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_half_gigabyte_binary_is_packed_pushed_and_read_back_in_flat_memory() {
    let t = tmp();
    let bin = big_binary(t.path(), 512);
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size >= 500_000_000, "{size}");
    let cache = t.path().join("cache");
    // What a run killed with SIGKILL while writing a large layer leaves: swept by the next.
    std::fs::create_dir_all(cache.join("cargo-microimage/spill")).unwrap();
    std::fs::write(cache.join("cargo-microimage/spill/.microimage-killed"), "x").unwrap();
    let pack = |out: &Path, extra: &[&str]| {
        let mut cmd = tool();
        cmd.current_dir(t.path())
            .env("XDG_CACHE_HOME", &cache)
            .args(["pack", "--sbom", "none"])
            .arg(&bin)
            .arg("-o")
            .arg(out)
            .args(extra);
        let (out, kb) = measured(&cmd);
        let out = out.ok();
        assert!(
            kb <= MEMORY_CEILING_KB,
            "pack {extra:?} peaked at {kb} KiB\n{}",
            out.stderr
        );
        out
    };

    // A layout, twice: the same digest (the stored and deflated chunks are decided by the
    // bytes alone).
    let first = pack(&t.path().join("a"), &[]);
    let second = pack(&t.path().join("b"), &[]);
    assert_eq!(result_line(&first.stdout).1, result_line(&second.stdout).1);
    // Nothing of the run is left where large layers were written meanwhile.
    assert_eq!(
        files_in(&cache.join("cargo-microimage/spill")),
        Vec::<String>::new()
    );

    // On a terminal, the long step draws a progress bar; stdout still holds the one result.
    let stdout = t.path().join("stdout");
    let mut on_tty = tool();
    on_tty
        .current_dir(t.path())
        .env("XDG_CACHE_HOME", &cache)
        .args(["pack", "--sbom", "none"])
        .arg(&bin)
        .arg("-o")
        .arg(t.path().join("c"));
    let terminal = on_terminal(&on_tty, &stdout);
    assert!(
        terminal.contains("Packing ["),
        "no progress bar:\n{terminal}"
    );
    assert_eq!(
        std::fs::read_to_string(&stdout).unwrap().trim(),
        first.stdout.trim().replace("/a:", "/c:")
    );
    std::fs::remove_dir_all(t.path().join("c")).unwrap();

    // skopeo reads it; the app layer holds the whole binary (half of it noise, so the layer
    // is at least a quarter of a gigabyte).
    let raw = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", t.path().join("a").display()),
        ],
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            t.path()
                .join("a/blobs/sha256")
                .join(manifest_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let app_layer = manifest["layers"].as_array().unwrap().last().unwrap();
    let layer_size = app_layer["size"].as_u64().unwrap();
    assert!(
        layer_size > size / 4 && layer_size < size * 3 / 4,
        "{layer_size} of {size}"
    );

    // umoci unpacks it, and the binary comes out whole.
    let bundle = t.path().join("bundle");
    external(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:latest", t.path().join("a").display()),
            bundle.to_str().unwrap(),
        ],
    );
    let unpacked = bundle.join("rootfs/usr/local/bin/hello");
    assert_eq!(
        external("sha256sum", &[unpacked.to_str().unwrap()])
            .split_whitespace()
            .next(),
        external("sha256sum", &[bin.to_str().unwrap()])
            .split_whitespace()
            .next()
    );
    std::fs::remove_dir_all(&bundle).unwrap();

    // A docker-archive (the layer decompressed on the way) in flat memory too; podman reads
    // it back as the same image.
    let archive = t.path().join("image.tar");
    pack(&archive, &["--format", "docker-archive"]);
    let listing = external("tar", &["-tvf", archive.to_str().unwrap()]);
    assert!(
        listing.lines().any(|l| l.ends_with(".tar")
            && l.split_whitespace()
                .nth(2)
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > size)),
        "{listing}"
    );
    std::fs::remove_file(&archive).unwrap();

    // Pushed to a registry in flat memory; skopeo sees the same manifest there.
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let reference = format!("{}/big:1", registry.host());
    let mut push = pusher(home.path());
    push.current_dir(t.path())
        .args(["pack", "--sbom", "none"])
        .arg(&bin)
        .args(["--push", &reference]);
    let (pushed, kb) = measured(&push);
    let pushed = pushed.ok();
    assert!(kb <= MEMORY_CEILING_KB, "push peaked at {kb} KiB");
    assert_eq!(
        pushed.stdout.trim().split_once('@').unwrap().1,
        result_line(&first.stdout).1
    );
    let remote = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    assert_eq!(remote.trim(), raw.trim());
}

#[test]
fn interrupting_a_large_pack_leaves_no_temporaries_anywhere() {
    let t = tmp();
    let bin = big_binary(t.path(), 600);
    let cache = t.path().join("cache");
    let spill = cache.join("cargo-microimage/spill");
    let out_dir = t.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut child = tool()
        .current_dir(t.path())
        .env("XDG_CACHE_HOME", &cache)
        .arg("pack")
        .arg(&bin)
        .arg("-o")
        .arg(out_dir.join("image"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Interrupted while the compressed layer is being written to disk.
    let start = Instant::now();
    while files_in(&spill).is_empty() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!files_in(&spill).is_empty(), "no layer was written to disk");
    run(Command::new("kill").args(["-INT", &child.id().to_string()])).ok();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(files_in(&spill), Vec::<String>::new());
    assert_eq!(files_in(&out_dir), Vec::<String>::new());
}
