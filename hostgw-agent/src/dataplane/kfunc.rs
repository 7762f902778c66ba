//! Conntrack kfuncs for the programs: finding them in the running kernel's BTF, and turning
//! the programs' placeholder calls into calls to them before the object is loaded.
//!
//! aya does not relocate kfunc calls and rustc emits no BTF for `extern` functions, so the
//! programs call placeholder helper ids ([`hostgw_common::kfunc`]) and this module rewrites
//! each such call instruction in the object's executable sections: `src_reg` becomes
//! `BPF_PSEUDO_KFUNC_CALL`, `imm` the function's BTF id, and `off` 0 for a function of vmlinux
//! or, for one defined by a module (conntrack built as `nf_conntrack.ko`, as on Debian, Ubuntu
//! and RHEL), the module's slot in the program's `fd_array` (1 for the first module of
//! [`Kernel::modules`]). A module's BTF (`/sys/kernel/btf/<module>`) is split BTF on top of
//! vmlinux's: its type ids and string offsets continue where vmlinux's end. On a kernel
//! without the functions the call becomes `r0 = 0`: the lookup finds nothing, so gated traffic
//! takes the stack (and without `bpf_ct_change_timeout` the programs, told so by a flag, do
//! not call it). Loading programs whose calls go into a module is the dataplane's
//! (`BPF_PROG_LOAD` with `fd_array`, which aya does not pass).
//!
//! The BTF reader is deliberately small: it walks the type section to find a function by
//! name and a struct member's offset (aya's BTF parser keeps member data private).

use std::{collections::BTreeMap, path::Path};

use object::{Object as _, ObjectSection as _, SectionKind};

/// The kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What the conntrack gate needs from the running kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kernel {
    /// BTF id of each kfunc found, by name.
    pub funcs: BTreeMap<String, u32>,
    /// The module whose BTF defines a kfunc, for those not in vmlinux.
    pub func_modules: BTreeMap<String, String>,
    /// Byte offset of `status` in `struct nf_conn`.
    pub ct_status_off: Option<u32>,
    /// Size of `struct bpf_ct_opts`.
    pub ct_opts_size: Option<u32>,
    /// Byte offset of `timeout` in `struct nf_conn`.
    pub ct_timeout_off: Option<u32>,
    /// Byte offset of `proto.tcp.state` in `struct nf_conn`.
    pub ct_tcp_state_off: Option<u32>,
}

impl Kernel {
    /// The modules whose BTF the kfunc calls need, in `fd_array` slot order (from 1).
    pub fn modules(&self) -> Vec<&str> {
        let mut m: Vec<&str> = self.func_modules.values().map(String::as_str).collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// The call's `off`: 0 for vmlinux, else the module's `fd_array` slot.
    fn slot(&self, func: &str) -> u16 {
        self.func_modules.get(func).map_or(0, |module| {
            self.modules()
                .iter()
                .position(|m| m == module)
                .map_or(0, |i| i as u16 + 1)
        })
    }

    /// Whether the conntrack gate can look flows up on this kernel.
    pub fn has_conntrack_lookup(&self) -> bool {
        hostgw_common::kfunc::ALL
            .iter()
            .all(|(_, name)| self.funcs.contains_key(*name))
            && self.ct_status_off.is_some()
            && self.ct_opts_size.is_some()
            && self.ct_timeout_off.is_some()
            && self.ct_tcp_state_off.is_some()
    }

    /// Whether the gate can set an entry's timeout (`bpf_ct_change_timeout`, Linux 6.0).
    pub fn has_change_timeout(&self) -> bool {
        self.has_conntrack_lookup()
            && hostgw_common::kfunc::OPTIONAL
                .iter()
                .all(|(_, name)| self.funcs.contains_key(*name))
    }

    /// Takes the struct layout from `btf` where it is still missing.
    fn layout_from(&mut self, btf: &Btf<'_>) {
        self.ct_status_off = self
            .ct_status_off
            .or_else(|| btf.member_offset("nf_conn", "status"));
        self.ct_opts_size = self.ct_opts_size.or_else(|| btf.struct_size("bpf_ct_opts"));
        self.ct_timeout_off = self
            .ct_timeout_off
            .or_else(|| btf.member_offset("nf_conn", "timeout"));
        // `proto` is a union whose `tcp` member (`struct ip_ct_tcp`) starts at its start.
        self.ct_tcp_state_off = self.ct_tcp_state_off.or_else(|| {
            Some(btf.member_offset("nf_conn", "proto")? + btf.member_offset("ip_ct_tcp", "state")?)
        });
    }
}

/// Why the kernel's BTF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KfuncError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not valid BTF")]
    Btf(String),
    #[error("the eBPF object is not a valid ELF file")]
    Elf(#[source] object::Error),
}

/// Reads what the gate needs from the BTF at `path` (vmlinux's), and from the modules' BTF
/// next to it for what vmlinux lacks.
pub fn read_kernel(path: &Path) -> Result<Kernel, KfuncError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| KfuncError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let data = read(path)?;
    let base =
        Btf::parse(&data, None).ok_or_else(|| KfuncError::Btf(path.display().to_string()))?;
    let names: Vec<&str> = hostgw_common::kfunc::ALL
        .iter()
        .chain(&hostgw_common::kfunc::OPTIONAL)
        .map(|(_, n)| *n)
        .collect();
    let mut kernel = Kernel {
        funcs: base.funcs(&names),
        ..Kernel::default()
    };
    kernel.layout_from(&base);
    if kernel.has_conntrack_lookup() && kernel.funcs.len() == names.len() {
        return Ok(kernel);
    }
    let mut modules: Vec<std::path::PathBuf> = path
        .parent()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    modules.retain(|m| m.as_path() != path);
    modules.sort();
    for module in modules {
        let Ok(data) = read(&module) else { continue };
        let Some(btf) = Btf::parse(&data, Some(&base)) else {
            continue;
        };
        let name = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (func, id) in btf.funcs(&names) {
            if !kernel.funcs.contains_key(&func) {
                kernel.func_modules.insert(func.clone(), name.clone());
                kernel.funcs.insert(func, id);
            }
        }
        kernel.layout_from(&btf);
    }
    Ok(kernel)
}

/// Whether the BTF at `path` (vmlinux's) defines each struct of `structs` and each function of
/// `funcs`, in that order: how the agent tells what a kernel has without trying it.
pub fn defines(path: &Path, structs: &[&str], funcs: &[&str]) -> Result<Vec<bool>, KfuncError> {
    let data = std::fs::read(path).map_err(|source| KfuncError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let btf = Btf::parse(&data, None).ok_or_else(|| KfuncError::Btf(path.display().to_string()))?;
    let found = btf.funcs(funcs);
    Ok(structs
        .iter()
        .map(|s| btf.find_struct(s).is_some())
        .chain(funcs.iter().map(|f| found.contains_key(*f)))
        .collect())
}

/// Rewrites the placeholder calls in `elf` (in place). Returns how many calls were rewritten
/// into kfunc calls and how many into `r0 = 0`.
pub fn patch(elf: &mut [u8], kernel: &Kernel) -> Result<(usize, usize), KfuncError> {
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*elf).map_err(KfuncError::Elf)?;
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| s.file_range())
            .map(|(off, len)| (off as usize, len as usize))
            .collect()
    };
    let ids: BTreeMap<u32, Option<(u32, u16)>> = hostgw_common::kfunc::ALL
        .iter()
        .chain(&hostgw_common::kfunc::OPTIONAL)
        .map(|(placeholder, name)| {
            let usable = kernel.has_conntrack_lookup();
            let id = kernel.funcs.get(*name).copied().filter(|_| usable);
            (*placeholder, id.map(|id| (id, kernel.slot(name))))
        })
        .collect();
    let (mut linked, mut stubbed) = (0, 0);
    for (off, len) in ranges {
        for insn in elf[off..off + len].chunks_exact_mut(8) {
            let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            // BPF_JMP | BPF_CALL with src_reg 0: a helper call.
            if insn[0] != 0x85 || insn[1] != 0 {
                continue;
            }
            let Some(target) = ids.get(&imm) else {
                continue;
            };
            if let Some((btf_id, slot)) = target {
                insn[1] = 2 << 4; // src_reg = BPF_PSEUDO_KFUNC_CALL
                insn[2..4].copy_from_slice(&slot.to_le_bytes()); // 0: vmlinux BTF
                insn[4..8].copy_from_slice(&btf_id.to_le_bytes());
                linked += 1;
            } else {
                // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 0.
                insn.copy_from_slice(&[0xb7, 0, 0, 0, 0, 0, 0, 0]);
                stubbed += 1;
            }
        }
    }
    Ok((linked, stubbed))
}

/// An eBPF object with its kfunc calls rewritten for `kernel`, in a buffer aligned for the
/// ELF parser.
pub struct PatchedObject {
    words: Vec<u64>,
    len: usize,
}

impl PatchedObject {
    /// Copies `src` (an ELF object) and patches it.
    pub fn new(src: &[u8], kernel: &Kernel) -> Result<Self, KfuncError> {
        let mut obj = Self {
            words: vec![0; src.len().div_ceil(8)],
            len: src.len(),
        };
        obj.bytes_mut().copy_from_slice(src);
        let (linked, stubbed) = patch(obj.bytes_mut(), kernel)?;
        tracing::debug!(linked, stubbed, "conntrack kfunc calls prepared");
        Ok(obj)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the u64 buffer holds at least `len` initialised bytes; u8 has no alignment
        // or validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; the borrow is unique through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.len) }
    }
}

/// A parsed BTF blob: type records and the string table; for split BTF (a module's), the base
/// it continues.
struct Btf<'a> {
    types: Vec<(u32, &'a [u8])>,
    strings: &'a [u8],
    /// The id of the first type: 1, or the base's type count + 1.
    first_id: u32,
    /// The base's strings: offsets below their length are the base's.
    base_strings: &'a [u8],
}

const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8], base: Option<&Btf<'a>>) -> Option<Self> {
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
        };
        if data.get(0..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut types = Vec::new();
        let mut pos = 0;
        while pos + 12 <= types_data.len() {
            let info = u32::from_le_bytes(types_data[pos + 4..pos + 8].try_into().ok()?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                2 | 7..=12 | 16 | 18 => 0,
                _ => return None,
            };
            let end = pos + 12 + extra;
            types.push((kind, types_data.get(pos..end)?));
            pos = end;
        }
        let (first_id, base_strings) = match base {
            None => (1, &[][..]),
            Some(b) => (b.first_id + b.types.len() as u32, b.strings),
        };
        Some(Self {
            types,
            strings,
            first_id,
            base_strings,
        })
    }

    fn name(&self, record: &[u8]) -> &str {
        let off = u32::from_le_bytes(record[0..4].try_into().unwrap_or_default()) as usize;
        let rest = if off < self.base_strings.len() {
            &self.base_strings[off..]
        } else {
            self.strings
                .get(off - self.base_strings.len()..)
                .unwrap_or_default()
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// Type ids of the functions named in `names`.
    fn funcs(&self, names: &[&str]) -> BTreeMap<String, u32> {
        self.types
            .iter()
            .enumerate()
            .filter(|(_, (kind, rec))| *kind == KIND_FUNC && names.contains(&self.name(rec)))
            .map(|(i, (_, rec))| (self.name(rec).to_owned(), self.first_id + i as u32))
            .collect()
    }

    fn find_struct(&self, name: &str) -> Option<&'a [u8]> {
        self.types
            .iter()
            .find(|(kind, rec)| *kind == KIND_STRUCT && self.name(rec) == name)
            .map(|(_, rec)| *rec)
    }

    fn struct_size(&self, name: &str) -> Option<u32> {
        let rec = self.find_struct(name)?;
        Some(u32::from_le_bytes(rec[8..12].try_into().ok()?))
    }

    /// Byte offset of a direct member of a struct.
    fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let rec = self.find_struct(name)?;
        let kind_flag = u32::from_le_bytes(rec[4..8].try_into().ok()?) >> 31 == 1;
        rec[12..].chunks_exact(12).find_map(|m| {
            if self.name(m) != member {
                return None;
            }
            let bits = u32::from_le_bytes(m[8..12].try_into().ok()?);
            let bits = if kind_flag { bits & 0x00ff_ffff } else { bits };
            (bits % 8 == 0).then_some(bits / 8)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_running_kernels_btf() {
        let k = read_kernel(Path::new(VMLINUX_BTF)).expect("this kernel has BTF");
        assert!(k.has_conntrack_lookup(), "{k:?}");
        let opts = k.ct_opts_size.unwrap();
        assert!(opts == 12 || opts == 16, "bpf_ct_opts is {opts} bytes");
        // timeout comes before the tuple hashes, status after them, proto near the end.
        let (timeout, status, tcp_state) = (
            k.ct_timeout_off.unwrap(),
            k.ct_status_off.unwrap(),
            k.ct_tcp_state_off.unwrap(),
        );
        assert!(
            0 < timeout && timeout < status && status < tcp_state,
            "{k:?}"
        );
    }

    #[test]
    fn patches_placeholder_calls_only() {
        let kernel = Kernel {
            funcs: BTreeMap::from([
                ("bpf_skb_ct_lookup".to_owned(), 101),
                ("bpf_xdp_ct_lookup".to_owned(), 102),
                ("bpf_ct_release".to_owned(), 103),
                ("bpf_ct_change_timeout".to_owned(), 104),
            ]),
            ct_status_off: Some(128),
            ct_opts_size: Some(16),
            ct_timeout_off: Some(8),
            ct_tcp_state_off: Some(180),
            ..Kernel::default()
        };
        let mut elf = hostgw_agent_object();
        let (linked, stubbed) = patch(&mut elf, &kernel).expect("patches");
        assert!(linked >= 4, "{linked} calls linked");
        assert_eq!(stubbed, 0);
        // Nothing is left to patch.
        assert_eq!(patch(&mut elf, &kernel).unwrap(), (0, 0));

        // A kernel before 6.0: the lookups, but no bpf_ct_change_timeout, whose calls only
        // become `r0 = 0`.
        let mut older = kernel.clone();
        older.funcs.remove("bpf_ct_change_timeout");
        assert!(older.has_conntrack_lookup() && !older.has_change_timeout());
        let mut elf = hostgw_agent_object();
        let (linked_older, stubbed) = patch(&mut elf, &older).expect("patches");
        assert!(stubbed >= 1, "{stubbed} calls stubbed");
        assert_eq!(linked_older + stubbed, linked);

        let mut elf = hostgw_agent_object();
        let without = Kernel {
            funcs: BTreeMap::new(),
            ..kernel
        };
        let (linked, stubbed) = patch(&mut elf, &without).expect("patches");
        assert_eq!(linked, 0);
        assert!(stubbed >= 3);
    }

    fn hostgw_agent_object() -> Vec<u8> {
        crate::dataplane::EBPF_OBJECT.to_vec()
    }

    /// One BTF type for [`btf`]: kind, name offset, size, members as `(name offset, bit
    /// offset)`.
    type TestType<'a> = (u32, u32, u32, &'a [(u32, u32)]);

    /// A BTF blob of `types` and `strings`.
    fn btf(types: &[TestType<'_>], strings: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for (kind, name, size, members) in types {
            t.extend(name.to_le_bytes());
            t.extend(((kind << 24) | members.len() as u32).to_le_bytes());
            t.extend(size.to_le_bytes());
            for (m, bits) in *members {
                t.extend(m.to_le_bytes());
                t.extend(0u32.to_le_bytes());
                t.extend(bits.to_le_bytes());
            }
        }
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(t);
        out.extend(strings);
        out
    }

    /// Conntrack as a module: the kfuncs, `nf_conn` and `bpf_ct_opts` are in its split BTF,
    /// whose ids and string offsets continue vmlinux's; the calls get the module's slot.
    #[test]
    fn kfuncs_of_a_module_come_from_its_split_btf() {
        let dir = std::env::temp_dir().join(format!("hostgw-btf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // vmlinux: two types (ids 1 and 2), strings "\0foo\0".
        let base = btf(
            &[(KIND_STRUCT, 1, 4, &[]), (KIND_FUNC, 1, 0, &[])],
            b"\0foo\0",
        );
        // The module's strings start at offset 5, after vmlinux's.
        let names = b"bpf_skb_ct_lookup\0bpf_xdp_ct_lookup\0bpf_ct_release\0nf_conn\0status\0\
            bpf_ct_opts\0timeout\0proto\0ip_ct_tcp\0state\0";
        let at = |name: &str| {
            let text = std::str::from_utf8(names).unwrap();
            5 + text.find(name).unwrap() as u32
        };
        let module = btf(
            &[
                (KIND_FUNC, at("bpf_skb_ct_lookup"), 0, &[]),
                (KIND_FUNC, at("bpf_xdp_ct_lookup"), 0, &[]),
                (KIND_FUNC, at("bpf_ct_release"), 0, &[]),
                (
                    KIND_STRUCT,
                    at("nf_conn"),
                    200,
                    &[
                        (at("timeout"), 8 * 8),
                        (at("status"), 128 * 8),
                        (at("proto"), 160 * 8),
                    ],
                ),
                (KIND_STRUCT, at("bpf_ct_opts"), 16, &[]),
                (KIND_STRUCT, at("ip_ct_tcp"), 40, &[(at("state"), 20 * 8)]),
            ],
            names,
        );
        std::fs::write(dir.join("vmlinux"), base).unwrap();
        std::fs::write(dir.join("nf_conntrack"), module).unwrap();
        let k = read_kernel(&dir.join("vmlinux")).expect("reads");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(k.has_conntrack_lookup(), "{k:?}");
        assert_eq!(
            k.funcs["bpf_skb_ct_lookup"], 3,
            "ids continue after vmlinux's two"
        );
        assert_eq!(k.funcs["bpf_ct_release"], 5);
        assert_eq!(k.ct_status_off, Some(128));
        assert_eq!(k.ct_opts_size, Some(16));
        assert_eq!((k.ct_timeout_off, k.ct_tcp_state_off), (Some(8), Some(180)));
        assert_eq!(k.modules(), vec!["nf_conntrack"]);
        assert_eq!(k.slot("bpf_xdp_ct_lookup"), 1);

        let mut elf = hostgw_agent_object();
        let (linked, _) = patch(&mut elf, &k).expect("patches");
        assert!(linked >= 3, "{linked}");
        // Every kfunc call now names slot 1 of the fd_array.
        let file = object::File::parse(&*elf).unwrap();
        let calls: Vec<u16> = file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .flat_map(|s| {
                s.data()
                    .unwrap()
                    .chunks_exact(8)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .filter(|i| i[0] == 0x85 && i[1] == 2 << 4)
            .map(|i| u16::from_le_bytes([i[2], i[3]]))
            .collect();
        assert!(
            !calls.is_empty() && calls.iter().all(|&off| off == 1),
            "{calls:?}"
        );
    }
}
