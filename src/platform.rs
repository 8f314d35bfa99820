//! The supported targets, in one table: Rust triple ↔ OCI platform ↔ ELF machine.
//!
//! Parsing of triples goes through `target-lexicon`; everything else in the tool asks this
//! module which platform a triple, a `--platform` string or an ELF header means. Adding a
//! target (armv7, riscv64) is one entry in [`SUPPORTED`].

use std::fmt;
use std::str::FromStr;

use target_lexicon::{
    Aarch64Architecture, Architecture, ArmArchitecture, Environment, OperatingSystem,
    Riscv64Architecture, Triple, X86_32Architecture,
};

use crate::error::{Error, Result};

/// One supported target: a musl triple and the OCI platform its binaries run on.
#[derive(Debug, PartialEq, Eq)]
pub struct Platform {
    /// The Rust target triple, e.g. `x86_64-unknown-linux-musl`.
    pub triple: &'static str,
    /// OCI `os`.
    pub os: &'static str,
    /// OCI `architecture` (GOARCH spelling).
    pub architecture: &'static str,
    /// OCI `variant`, e.g. `v8` for arm64.
    pub variant: Option<&'static str>,
    /// ELF `e_machine` of binaries for this target.
    pub elf_machine: object::elf::Machine,
    /// ELF class: true for 64-bit.
    pub elf_64: bool,
    /// ELF byte order: true for big-endian.
    pub elf_big_endian: bool,
    /// ELF `e_flags` of objects for this target (ABI and float flags, where the linker
    /// checks them), for the object file that carries the dependency data.
    pub elf_flags: u32,
    /// The architecture as the `object` crate writes it.
    object_arch: object::Architecture,
    /// The architecture as target-lexicon names it.
    arch: Architecture,
}

/// Every target the tool builds for. The order is the order of an index's manifests:
/// amd64 and arm64 (the common pair, `--platform all`) first, then the others; `linux/arm`
/// without a variant means the first arm entry, v7 (as Docker takes it).
///
/// ELF `e_flags`: armv7/armv6 hard-float EABI 5 (`EF_ARM_EABI_VER5 | EF_ARM_ABI_FLOAT_HARD`),
/// riscv64gc the double-float ABI with compressed instructions (`EF_RISCV_FLOAT_ABI_DOUBLE |
/// EF_RISCV_RVC`), ppc64le the ELFv2 ABI; what rustc writes into objects for these targets.
/// s390x is the one big-endian platform.
pub static SUPPORTED: &[Platform] = &[
    Platform {
        triple: "x86_64-unknown-linux-musl",
        os: "linux",
        architecture: "amd64",
        variant: None,
        elf_machine: object::elf::EM_X86_64,
        elf_64: true,
        elf_big_endian: false,
        elf_flags: 0,
        object_arch: object::Architecture::X86_64,
        arch: Architecture::X86_64,
    },
    Platform {
        triple: "aarch64-unknown-linux-musl",
        os: "linux",
        architecture: "arm64",
        variant: Some("v8"),
        elf_machine: object::elf::EM_AARCH64,
        elf_64: true,
        elf_big_endian: false,
        elf_flags: 0,
        object_arch: object::Architecture::Aarch64,
        arch: Architecture::Aarch64(Aarch64Architecture::Aarch64),
    },
    Platform {
        triple: "armv7-unknown-linux-musleabihf",
        os: "linux",
        architecture: "arm",
        variant: Some("v7"),
        elf_machine: object::elf::EM_ARM,
        elf_64: false,
        elf_big_endian: false,
        elf_flags: 0x0500_0400,
        object_arch: object::Architecture::Arm,
        arch: Architecture::Arm(ArmArchitecture::Armv7),
    },
    Platform {
        triple: "arm-unknown-linux-musleabihf",
        os: "linux",
        architecture: "arm",
        variant: Some("v6"),
        elf_machine: object::elf::EM_ARM,
        elf_64: false,
        elf_big_endian: false,
        elf_flags: 0x0500_0400,
        object_arch: object::Architecture::Arm,
        arch: Architecture::Arm(ArmArchitecture::Arm),
    },
    Platform {
        triple: "i686-unknown-linux-musl",
        os: "linux",
        architecture: "386",
        variant: None,
        elf_machine: object::elf::EM_386,
        elf_64: false,
        elf_big_endian: false,
        elf_flags: 0,
        object_arch: object::Architecture::I386,
        arch: Architecture::X86_32(X86_32Architecture::I686),
    },
    Platform {
        triple: "riscv64gc-unknown-linux-musl",
        os: "linux",
        architecture: "riscv64",
        variant: None,
        elf_machine: object::elf::EM_RISCV,
        elf_64: true,
        elf_big_endian: false,
        elf_flags: 0x0005,
        object_arch: object::Architecture::Riscv64,
        arch: Architecture::Riscv64(Riscv64Architecture::Riscv64gc),
    },
    Platform {
        triple: "powerpc64le-unknown-linux-musl",
        os: "linux",
        architecture: "ppc64le",
        variant: None,
        elf_machine: object::elf::EM_PPC64,
        elf_64: true,
        elf_big_endian: false,
        elf_flags: 2,
        object_arch: object::Architecture::PowerPc64,
        arch: Architecture::Powerpc64le,
    },
    // IBM Z: big-endian, and tier 3 for Rust (no prebuilt standard library anywhere).
    Platform {
        triple: "s390x-unknown-linux-musl",
        os: "linux",
        architecture: "s390x",
        variant: None,
        elf_machine: object::elf::EM_S390,
        elf_64: true,
        elf_big_endian: true,
        elf_flags: 0,
        object_arch: object::Architecture::S390x,
        arch: Architecture::S390x,
    },
];

/// `--platform all`: the common pair.
pub const ALL: &[&str] = &["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// `--platform all-supported`: every platform in [`SUPPORTED`].
pub const ALL_SUPPORTED: &str = "all-supported";

impl Platform {
    /// The architecture as the `object` crate writes it.
    pub fn object_architecture(&self) -> object::Architecture {
        self.object_arch
    }

    /// x86 or x86_64 (where musl's `memcpy` is a `rep movs` loop; see `build::runtime`).
    pub fn is_x86(&self) -> bool {
        matches!(
            self.object_arch,
            object::Architecture::X86_64 | object::Architecture::I386
        )
    }

    /// 64-bit arm.
    pub fn is_aarch64(&self) -> bool {
        self.object_arch == object::Architecture::Aarch64
    }

    /// `linux/amd64`, `linux/arm64/v8`.
    pub fn oci_name(&self) -> String {
        match self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// `linux/amd64`, `linux/arm64`, `linux/arm/v7`: the short form people type (the
    /// variant only where it tells platforms apart).
    pub fn short_name(&self) -> String {
        match self.variant {
            Some(v) if self.architecture == "arm" => {
                format!("{}/{}/{v}", self.os, self.architecture)
            }
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The platform of the machine this runs on.
    pub fn host() -> Result<&'static Platform> {
        let host = Triple::host();
        SUPPORTED
            .iter()
            .find(|p| p.arch == host.architecture)
            .ok_or_else(|| {
                Error::usage(format!(
                    "this machine's architecture ({}) has no supported image platform",
                    host.architecture
                ))
                .with_help(format!("pass --platform; supported: {}", supported_list()))
            })
    }

    /// Parses `linux/amd64`, `linux/arm64`, `linux/arm64/v8`, `amd64`, `arm64`,
    /// `linux/arm/v7`, `linux/arm/v6`, `linux/arm` (v7), `linux/386`, `linux/riscv64`,
    /// `linux/ppc64le`, `linux/s390x`.
    pub fn from_oci(name: &str) -> Result<&'static Platform> {
        let parts: Vec<&str> = name.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => ("", "", None),
        };
        SUPPORTED
            .iter()
            .find(|p| {
                p.os == os && p.architecture == arch && (variant.is_none() || variant == p.variant)
            })
            .ok_or_else(|| {
                Error::usage(format!("unsupported platform `{name}`")).with_help(format!(
                    "supported platforms: {}; `all` (linux/amd64 and linux/arm64) or `{ALL_SUPPORTED}`",
                    supported_list()
                ))
            })
    }

    /// Parses a Rust target triple; only the musl Linux targets in [`SUPPORTED`] qualify.
    pub fn from_triple(triple: &str) -> Result<&'static Platform> {
        let unsupported = |why: &str| {
            Error::usage(format!("unsupported target `{triple}`: {why}")).with_help(format!(
                "images are built from static musl binaries; supported targets: {}",
                SUPPORTED
                    .iter()
                    .map(|p| p.triple)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        let parsed = Triple::from_str(triple).map_err(|e| unsupported(&e.to_string()))?;
        if parsed.operating_system != OperatingSystem::Linux {
            return Err(unsupported("the operating system must be linux"));
        }
        match parsed.environment {
            Environment::Musl | Environment::Musleabihf => {}
            Environment::Musleabi => {
                return Err(unsupported(
                    "soft-float arm is not supported: use the hard-float (musleabihf) target",
                ))
            }
            _ => {
                return Err(unsupported(
                    "only musl targets give fully static binaries for a scratch image",
                ))
            }
        }
        SUPPORTED
            .iter()
            .find(|p| p.arch == parsed.architecture)
            .ok_or_else(|| unsupported("this architecture is not supported yet"))
    }

    /// The platform of an ELF binary: its machine, class and byte order, and for 32-bit
    /// arm the architecture version its `.ARM.attributes` record (`Tag_CPU_arch`: 6 to 9
    /// are ARMv6 variants, 10 and up v7 or later; without one, v7).
    pub fn from_elf(
        machine: object::elf::Machine,
        is_64: bool,
        big_endian: bool,
        arm_cpu_arch: Option<u64>,
    ) -> Option<&'static Platform> {
        let variant = match (machine, arm_cpu_arch) {
            (object::elf::EM_ARM, Some(6..=9)) => Some("v6"),
            (object::elf::EM_ARM, Some(0..=5)) => return None,
            (object::elf::EM_ARM, _) => Some("v7"),
            _ => None,
        };
        SUPPORTED.iter().find(|p| {
            p.elf_machine == machine
                && p.elf_64 == is_64
                && p.elf_big_endian == big_endian
                && (variant.is_none() || p.variant == variant)
        })
    }

    /// The OCI platform value for index entries.
    pub fn to_oci(&self) -> oci_spec::image::Platform {
        let mut b = oci_spec::image::PlatformBuilder::default()
            .architecture(oci_spec::image::Arch::from(self.architecture))
            .os(oci_spec::image::Os::from(self.os));
        if let Some(v) = self.variant {
            b = b.variant(v);
        }
        b.build().expect("platform fields are all set")
    }
}

/// Platforms sort by their place in [`SUPPORTED`], so every output lists them in one order.
impl Ord for Platform {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let place = |p: &Platform| SUPPORTED.iter().position(|s| s.triple == p.triple);
        place(self).cmp(&place(other))
    }
}

impl PartialOrd for Platform {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short_name())
    }
}

/// `linux/amd64, linux/arm64`.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|p| p.short_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves `--platform` values (each may be a comma list or `all`) and `--target`
/// triples into a sorted, duplicate-free list; empty input means the host platform.
pub fn resolve(platforms: &[String], targets: &[String]) -> Result<Vec<&'static Platform>> {
    let mut out: Vec<&'static Platform> = Vec::new();
    for value in platforms {
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                out.extend(SUPPORTED.iter().filter(|p| ALL.contains(&p.triple)));
            } else if name == ALL_SUPPORTED {
                out.extend(SUPPORTED.iter());
            } else {
                out.push(Platform::from_oci(name)?);
            }
        }
    }
    for triple in targets {
        for t in triple.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(Platform::from_triple(t)?);
        }
    }
    if out.is_empty() {
        out.push(Platform::host()?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_names() {
        assert_eq!(
            Platform::from_oci("linux/amd64").unwrap().triple,
            "x86_64-unknown-linux-musl"
        );
        assert_eq!(
            Platform::from_oci("linux/arm64/v8").unwrap().architecture,
            "arm64"
        );
        assert_eq!(
            Platform::from_oci("arm64").unwrap().oci_name(),
            "linux/arm64/v8"
        );
        let err = Platform::from_oci("linux/mips64le").unwrap_err();
        assert!(err.is_usage());
        assert!(err.help().unwrap().contains("linux/amd64, linux/arm64"));
    }

    #[test]
    fn triples() {
        assert_eq!(
            Platform::from_triple("aarch64-unknown-linux-musl")
                .unwrap()
                .architecture,
            "arm64"
        );
        let gnu = Platform::from_triple("x86_64-unknown-linux-gnu").unwrap_err();
        assert!(gnu.message().contains("only musl targets"), "{gnu}");
        assert!(Platform::from_triple("x86_64-apple-darwin").is_err());
        for p in SUPPORTED {
            assert_eq!(Platform::from_triple(p.triple).unwrap(), p);
            assert_eq!(Platform::from_oci(&p.oci_name()).unwrap(), p);
            assert_eq!(Platform::from_oci(&p.short_name()).unwrap(), p);
            let arm_arch =
                (p.architecture == "arm").then(|| if p.variant == Some("v6") { 6 } else { 10 });
            assert_eq!(
                Platform::from_elf(p.elf_machine, p.elf_64, p.elf_big_endian, arm_arch).unwrap(),
                p
            );
        }
        assert_eq!(Platform::from_oci("linux/arm").unwrap().variant, Some("v7"));
        assert!(Platform::from_triple("armv7-unknown-linux-musleabi").is_err());
        assert!(Platform::from_triple("loongarch64-unknown-linux-musl").is_err());
    }

    #[test]
    fn resolve_lists() {
        let all = resolve(&["all".into()], &[]).unwrap();
        assert_eq!(
            all.iter().map(|p| p.short_name()).collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"]
        );
        let every = resolve(&[ALL_SUPPORTED.into()], &[]).unwrap();
        assert_eq!(
            every.iter().map(|p| p.short_name()).collect::<Vec<_>>(),
            [
                "linux/amd64",
                "linux/arm64",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/386",
                "linux/riscv64",
                "linux/ppc64le",
                "linux/s390x"
            ]
        );
        // s390x is big-endian: a little-endian ELF of its machine is no platform's.
        let s390x = Platform::from_triple("s390x-unknown-linux-musl").unwrap();
        assert!(s390x.elf_big_endian);
        assert!(Platform::from_elf(object::elf::EM_S390, true, false, None).is_none());
        let listed = resolve(
            &["linux/riscv64,linux/386".into(), "linux/arm/v7".into()],
            &[],
        )
        .unwrap();
        assert_eq!(
            listed.iter().map(|p| p.triple).collect::<Vec<_>>(),
            [
                "armv7-unknown-linux-musleabihf",
                "i686-unknown-linux-musl",
                "riscv64gc-unknown-linux-musl"
            ]
        );
        let two = resolve(&["linux/arm64,linux/amd64".into(), "amd64".into()], &[]).unwrap();
        assert_eq!(
            two.iter().map(|p| p.architecture).collect::<Vec<_>>(),
            ["amd64", "arm64"]
        );
        assert_eq!(resolve(&[], &[]).unwrap().len(), 1);
    }
}
