//! The ELF checker under fire: mutated and truncated copies of real ELF files — static and
//! dynamic x86_64, 32-bit i386, 32-bit riscv, big-endian aarch64, a shared library — never make it panic
//! or hang, and it never accepts one that carries `PT_INTERP`/`DT_NEEDED` or that cannot
//! run on the platform it names (checked against binutils' `readelf`, which nobody here
//! wrote). Bounded: a few hundred mutants per file, seconds in all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn zig(dir: &Path, name: &str, target: &str, extra: &[&str]) -> PathBuf {
    let src = dir.join("start.c");
    std::fs::write(&src, "void _start(void) { for (;;) {} }\n").unwrap();
    let out = dir.join(name);
    run(Command::new("python3")
        .args(["-m", "ziglang", "cc", "-target", target, "-nostdlib", "-O1"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("ZIG_GLOBAL_CACHE_DIR", shared_target().join("zig-cache")))
    .ok();
    out
}

/// What `readelf` says of an accepted file that would make acceptance wrong.
fn readelf_objection(path: &Path, platform: &str) -> Option<String> {
    let out = run(Command::new("readelf").args(["-hldW"]).arg(path));
    let text = format!("{}{}", out.stdout, out.stderr);
    if text.contains("Requesting program interpreter") || text.contains("(NEEDED)") {
        return Some(format!("loader or libraries:\n{text}"));
    }
    let (machine, class) = match platform {
        "linux/amd64" => ("X86-64", "ELF64"),
        "linux/arm64" => ("AArch64", "ELF64"),
        "linux/386" => ("Intel 80386", "ELF32"),
        "linux/arm/v7" | "linux/arm/v6" => ("ARM", "ELF32"),
        "linux/riscv64" => ("RISC-V", "ELF64"),
        "linux/ppc64le" => ("PowerPC64", "ELF64"),
        other => return Some(format!("unexpected platform {other}")),
    };
    let named = text.lines().any(|l| {
        l.trim_start().starts_with("Machine:") && l.trim_end().ends_with(&format!(" {machine}"))
    });
    if !named || !text.contains("little endian") || !text.contains(class) {
        return Some(format!("not {platform}:\n{text}"));
    }
    if !(text.contains("EXEC (Executable file)") || text.contains("DYN (Position-Independent")) {
        return Some(format!("not an executable:\n{text}"));
    }
    None
}

#[test]
fn mutated_elf_files_never_panic_hang_or_pass_wrongly() {
    let t = tmp();
    let d = t.path();
    let hello = fixture("hello");
    let samples: Vec<PathBuf> = vec![
        cargo_build_fixture(hello.path(), "hello"),
        PathBuf::from("/bin/ls"),
        zig(d, "i386", "x86-linux-musl", &["-static"]),
        zig(d, "be", "aarch64_be-linux-musl", &["-static"]),
        zig(d, "rv32", "riscv32-linux-musl", &["-static"]),
        zig(d, "lib.so", "x86_64-linux-musl", &["-shared"]),
    ];
    let mutant = d.join("mutant");
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let started = Instant::now();
    let (mut checked, mut accepted) = (0, 0);
    for sample in &samples {
        let original = std::fs::read(sample).unwrap();
        for round in 0..300 {
            let mut bytes = original.clone();
            // Headers and program headers live at the front; the dynamic section and the
            // section headers further in: mutate mostly the front, sometimes anywhere.
            let span = if round % 4 == 0 {
                bytes.len()
            } else {
                bytes.len().min(8192)
            };
            for _ in 0..rng.usize(1..=8) {
                let at = rng.usize(0..span);
                bytes[at] = match rng.u8(0..4) {
                    0 => 0,
                    1 => 0xff,
                    2 => bytes[at] ^ (1 << rng.u8(0..8)),
                    _ => rng.u8(..),
                };
            }
            if round % 5 == 0 {
                bytes.truncate(rng.usize(0..=bytes.len()));
            }
            std::fs::write(&mutant, &bytes).unwrap();
            let verdict = std::panic::catch_unwind(|| microimage::verify::inspect(&mutant))
                .unwrap_or_else(|_| panic!("verify panicked on a mutant of {}", sample.display()));
            checked += 1;
            if let Ok(platform) = verdict.as_ref().map(|v| v.require_static()) {
                let Ok(platform) = platform else { continue };
                accepted += 1;
                if let Some(objection) = readelf_objection(&mutant, &platform.short_name()) {
                    let keep = d.join(format!("accepted-{accepted}"));
                    std::fs::copy(&mutant, &keep).unwrap();
                    panic!(
                        "accepted a mutant of {} as {platform} ({}): {objection}",
                        sample.display(),
                        keep.display()
                    );
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "too slow: a hang?"
        );
    }
    assert_eq!(checked, samples.len() * 300);
    // The unmutated static samples (x86_64, and i386: linux/386) pass, the others do not.
    for (i, sample) in samples.iter().enumerate() {
        let runnable = microimage::verify::inspect(sample)
            .map(|v| v.require_static().is_ok())
            .unwrap_or(false);
        assert_eq!(runnable, i == 0 || i == 2, "{}", sample.display());
    }
}
