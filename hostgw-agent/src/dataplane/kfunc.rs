//! Conntrack kfuncs for the programs: finding them in the running kernel's BTF, and turning
//! the programs' placeholder calls into calls to them before the object is loaded.
//!
//! aya does not relocate kfunc calls and rustc emits no BTF for `extern` functions, so the
//! programs call placeholder helper ids ([`hostgw_common::kfunc`]) and this module rewrites
//! each such call instruction in the object's executable sections: `src_reg` becomes
//! `BPF_PSEUDO_KFUNC_CALL`, `imm` the function's BTF id in `/sys/kernel/btf/vmlinux`. On a
//! kernel without the functions the call becomes `r0 = 0`: the lookup finds nothing, so
//! gated traffic takes the stack.
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
    /// Byte offset of `status` in `struct nf_conn`.
    pub ct_status_off: Option<u32>,
    /// Size of `struct bpf_ct_opts`.
    pub ct_opts_size: Option<u32>,
}

impl Kernel {
    /// Whether the conntrack gate can look flows up on this kernel.
    pub fn has_conntrack_lookup(&self) -> bool {
        hostgw_common::kfunc::ALL
            .iter()
            .all(|(_, name)| self.funcs.contains_key(*name))
            && self.ct_status_off.is_some()
            && self.ct_opts_size.is_some()
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

/// Reads what the gate needs from the BTF at `path`.
pub fn read_kernel(path: &Path) -> Result<Kernel, KfuncError> {
    let data = std::fs::read(path).map_err(|source| KfuncError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let btf = Btf::parse(&data).ok_or_else(|| KfuncError::Btf(path.display().to_string()))?;
    let names: Vec<&str> = hostgw_common::kfunc::ALL.iter().map(|(_, n)| *n).collect();
    Ok(Kernel {
        funcs: btf.funcs(&names),
        ct_status_off: btf.member_offset("nf_conn", "status"),
        ct_opts_size: btf.struct_size("bpf_ct_opts"),
    })
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
    let ids: BTreeMap<u32, Option<u32>> = hostgw_common::kfunc::ALL
        .iter()
        .map(|(placeholder, name)| {
            let usable = kernel.has_conntrack_lookup();
            (
                *placeholder,
                kernel.funcs.get(*name).copied().filter(|_| usable),
            )
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
            if let Some(btf_id) = target {
                insn[1] = 2 << 4; // src_reg = BPF_PSEUDO_KFUNC_CALL
                insn[2..4].copy_from_slice(&0u16.to_le_bytes()); // vmlinux BTF
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

/// A parsed BTF blob: type records and the string table.
struct Btf<'a> {
    types: Vec<(u32, &'a [u8])>,
    strings: &'a [u8],
}

const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
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
        Some(Self { types, strings })
    }

    fn name(&self, record: &[u8]) -> &str {
        let off = u32::from_le_bytes(record[0..4].try_into().unwrap_or_default()) as usize;
        let rest = self.strings.get(off..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// Type ids (1-based) of the functions named in `names`.
    fn funcs(&self, names: &[&str]) -> BTreeMap<String, u32> {
        self.types
            .iter()
            .enumerate()
            .filter(|(_, (kind, rec))| *kind == KIND_FUNC && names.contains(&self.name(rec)))
            .map(|(i, (_, rec))| (self.name(rec).to_owned(), i as u32 + 1))
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
        // status follows the conntrack tuple hashes; it is never at the start.
        assert!(k.ct_status_off.unwrap() > 0);
    }

    #[test]
    fn patches_placeholder_calls_only() {
        let kernel = Kernel {
            funcs: BTreeMap::from([
                ("bpf_skb_ct_lookup".to_owned(), 101),
                ("bpf_xdp_ct_lookup".to_owned(), 102),
                ("bpf_ct_release".to_owned(), 103),
            ]),
            ct_status_off: Some(128),
            ct_opts_size: Some(16),
        };
        let mut elf = hostgw_agent_object();
        let (linked, stubbed) = patch(&mut elf, &kernel).expect("patches");
        assert!(linked >= 3, "{linked} calls linked");
        assert_eq!(stubbed, 0);
        // Nothing is left to patch.
        assert_eq!(patch(&mut elf, &kernel).unwrap(), (0, 0));

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
}
