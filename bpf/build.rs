//! Compiles `bpf/sk_lookup.c` with clang so the embedded object always matches its source.

use std::{
    env,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

const SOURCE: &str = "bpf/sk_lookup.c";
const OBJECT: &str = "sk_lookup.bpf.o";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=BPF_CLANG");

    let clang = env::var("BPF_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(OBJECT);

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    // `-target bpf` drops the multiarch include dir, where Debian keeps
    // <asm/types.h> (needed by <linux/bpf.h>).
    if let Some(dir) = multiarch_include_dir(&clang) {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("-c").arg(SOURCE).arg("-o").arg(&out);

    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => fail(&format!(
            "`{clang}` not found. The BPF program is C compiled by clang: \
             `apt-get install clang libbpf-dev` (see INSTALL.md) or set BPF_CLANG"
        )),
        Err(e) => fail(&format!("running `{clang}`: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            "\nhint: <bpf/bpf_helpers.h> comes from `apt-get install libbpf-dev`"
        } else if stderr.contains("asm/types.h") || stderr.contains("linux/bpf.h") {
            "\nhint: <linux/bpf.h> and <asm/types.h> come from `apt-get install linux-libc-dev`"
        } else {
            ""
        };
        fail(&format!("compiling {SOURCE} failed:\n{stderr}{hint}"));
    }
}

/// `/usr/include/<triple>` as reported by clang, if it exists.
fn multiarch_include_dir(clang: &str) -> Option<PathBuf> {
    let output = Command::new(clang).arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(output.stdout).ok()?;
    let dir = Path::new("/usr/include").join(triple.trim());
    (!triple.trim().is_empty() && dir.is_dir()).then_some(dir)
}

fn fail(message: &str) -> ! {
    // cargo prints a failed build script's stderr; a panic would add a backtrace.
    eprintln!("error: {message}");
    std::process::exit(1);
}
