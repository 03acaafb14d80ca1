//! Merkle trees as Certificate Transparency has them (RFC 6962 §2.1, RFC
//! 9162 §2.1), the structure a sensor will sign over each batch's flow
//! records so that a third party can check, for one record, that it was
//! in a batch the sensor signed (issue #26). Chosen because it is
//! standard: anyone can write a verifier from the RFC, and its published
//! test vectors check this one.
//!
//! - a leaf's hash is SHA-256(0x00 ‖ leaf bytes);
//! - an inner node's is SHA-256(0x01 ‖ left ‖ right);
//! - a tree of n > 1 leaves splits them at k, the largest power of two
//!   below n: the left subtree holds leaves [0, k), the right [k, n);
//! - the root of no leaves is SHA-256 of nothing;
//! - an inclusion proof (audit path) lists, from the leaf up, the sibling
//!   hashes needed to recompute the root.

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of a leaf: SHA-256(0x00 ‖ `data`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an inner node: SHA-256(0x01 ‖ `left` ‖ `right`).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root of the tree over `leaves` (leaf hashes, in order).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree over `leaves`, from the
/// leaf up; `None` if `index` is not a leaf.
pub fn proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let mut lo = leaves;
    let mut i = index;
    // Down from the root, collecting the other subtree's root at each
    // split; the path runs from the leaf up, so reverse at the end.
    while lo.len() > 1 {
        let k = split(lo.len());
        if i < k {
            path.push(root(&lo[k..]));
            lo = &lo[..k];
        } else {
            path.push(root(&lo[..k]));
            lo = &lo[k..];
            i -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// The inclusion proofs of several leaves at once, in one walk of the
/// tree (what [`proof`] gives for each, at the cost of one root): the
/// proofs of `indices`, in their order; `None` for an index that is not a
/// leaf.
pub fn proofs(leaves: &[Hash], indices: &[usize]) -> Vec<Option<Vec<Hash>>> {
    let mut wanted: Vec<(usize, usize)> = indices
        .iter()
        .enumerate()
        .filter(|(_, i)| **i < leaves.len())
        .map(|(k, i)| (*i, k))
        .collect();
    wanted.sort_unstable();
    let mut out: Vec<Option<Vec<Hash>>> = indices
        .iter()
        .map(|i| (*i < leaves.len()).then(Vec::new))
        .collect();
    fn walk(
        leaves: &[Hash],
        base: usize,
        wanted: &[(usize, usize)],
        out: &mut [Option<Vec<Hash>>],
    ) -> Hash {
        if wanted.is_empty() {
            return root(leaves);
        }
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = split(leaves.len());
        let cut = wanted.partition_point(|(i, _)| *i < base + k);
        let (wl, wr) = wanted.split_at(cut);
        let left = walk(&leaves[..k], base, wl, out);
        let right = walk(&leaves[k..], base + k, wr, out);
        // Sibling hashes go on from the leaf up: the deeper levels were
        // pushed by the calls above.
        for (_, slot) in wl {
            if let Some(p) = out[*slot].as_mut() {
                p.push(right);
            }
        }
        for (_, slot) in wr {
            if let Some(p) = out[*slot].as_mut() {
                p.push(left);
            }
        }
        node_hash(&left, &right)
    }
    walk(leaves, 0, &wanted, &mut out);
    out
}

/// Whether `proof` shows the leaf hashed `leaf` at `index` in a tree of
/// `size` leaves whose root is `root` (RFC 9162 §2.1.3.2). The size must
/// come authenticated with the root (signed together): a path can prove
/// the same root for another size.
pub fn verify(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    fn bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The Certificate Transparency reference leaves and tree heads.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference() -> Vec<Hash> {
        LEAVES.iter().map(|l| leaf_hash(&bytes(l))).collect()
    }

    #[test]
    fn roots_match_the_rfc_6962_reference_tree_heads() {
        let leaves = reference();
        for n in 0..=8 {
            assert_eq!(root(&leaves[..n]), h(ROOTS[n]), "size {n}");
        }
    }

    #[test]
    fn proofs_match_the_reference_audit_paths() {
        let leaves = reference();
        let cases: [(usize, usize, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (i, n, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof(&leaves[..n], i).unwrap(), want, "leaf {i} of {n}");
            assert!(verify(&leaves[i], i as u64, n as u64, &want, &h(ROOTS[n])));
        }
    }

    /// Every leaf of every tree up to 70 leaves proves, and any change —
    /// another leaf, index, root or a path hash — fails. (The size is not
    /// among them: leaf 0 of 3 proves as leaf 0 of 4 with the same path,
    /// the third hash read as a subtree's; the size must be signed with
    /// the root, as CT's tree heads are.)
    #[test]
    fn every_proof_verifies_and_no_tampered_one_does() {
        let all: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for n in 1..=all.len() {
            let leaves = &all[..n];
            let r = root(leaves);
            for i in 0..n {
                let p = proof(leaves, i).unwrap();
                let (iu, nu) = (i as u64, n as u64);
                assert!(verify(&leaves[i], iu, nu, &p, &r), "leaf {i} of {n}");
                assert!(!verify(&leaf_hash(b"forged"), iu, nu, &p, &r));
                assert!(!verify(&leaves[i], nu, nu, &p, &r));
                if n > 1 {
                    assert!(!verify(&leaves[i], (iu + 1) % nu, nu, &p, &r));
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify(&leaves[i], iu, nu, &bad, &r));
                }
                let mut r2 = r;
                r2[31] ^= 1;
                assert!(!verify(&leaves[i], iu, nu, &p, &r2));
            }
            assert_eq!(proof(leaves, n), None);
        }
    }

    #[test]
    fn proofs_of_many_leaves_are_each_leafs_proof() {
        for n in [1usize, 2, 3, 5, 7, 8, 9, 33, 100] {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let mut idx: Vec<usize> = (0..n).rev().step_by(2).collect();
            idx.push(n);
            idx.push(0);
            let got = proofs(&leaves, &idx);
            for (i, p) in idx.iter().zip(&got) {
                assert_eq!(p, &proof(&leaves, *i), "n {n} index {i}");
            }
        }
    }
}
