//! Directory names for media: a volume label made safe, and collisions resolved.
//!
//! Pure functions (and [`Suffixes`], where searches for a free name resume). The rules (DESIGN.md, "Names"): keep `[A-Za-z0-9._+-]`, anything else
//! becomes `_`, runs of `_` collapse, leading `.` and `-` go, at most 200 bytes; a name with no
//! letter or digit falls back to the file stem or device name; equal names get `-2`, `-3`...

use std::collections::HashMap;

/// Longest name produced, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The label made safe for a directory name, or `None` if no letter or digit survives.
pub fn sanitize(label: &str) -> Option<String> {
    // Byte by byte: only ASCII is kept, and every byte of a multi-byte character becomes '_'
    // like the character would, collapsing into one '_' all the same.
    let mut out = Vec::with_capacity(label.len().min(MAX_NAME_LEN));
    for &b in label.as_bytes() {
        let b = if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-') {
            b
        } else {
            b'_'
        };
        if b == b'_' && out.last() == Some(&b'_') {
            continue;
        }
        if (b == b'.' || b == b'-') && out.is_empty() {
            continue;
        }
        out.push(b);
    }
    // Stripping can expose nothing new at the front: '_' is neither '.' nor '-'.
    out.truncate(MAX_NAME_LEN);
    let has_alnum = out.iter().any(u8::is_ascii_alphanumeric);
    if !has_alnum || out == b"." || out == b".." {
        return None;
    }
    // Only ASCII bytes were pushed.
    String::from_utf8(out).ok()
}

/// The name a medium gets before collisions: its label, else `fallback` (the file stem or the
/// kernel device name), else "medium".
pub fn base_name(label: Option<&str>, fallback: &str) -> String {
    label
        .and_then(sanitize)
        .or_else(|| sanitize(fallback))
        .unwrap_or_else(|| "medium".to_owned())
}

/// The first of `base`, `base-2`, `base-3`... that `taken` does not hold, kept within
/// [`MAX_NAME_LEN`] bytes.
pub fn first_free(base: &str, taken: impl Fn(&str) -> bool) -> String {
    first_free_from(base, 2, taken).0
}

/// [`first_free`] with `base-2` up to `base-{from - 1}` known to be taken: the search starts at
/// `base-{from}`. Returns the name and its suffix, 0 for `base` itself.
fn first_free_from(base: &str, from: u64, taken: impl Fn(&str) -> bool) -> (String, u64) {
    if !taken(base) {
        return (base.to_owned(), 0);
    }
    (from.max(2)..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = MAX_NAME_LEN.saturating_sub(suffix.len()).min(base.len());
            (format!("{}{suffix}", &base[..keep]), n)
        })
        .find(|(candidate, _)| !taken(candidate))
        .unwrap_or_else(|| (base.to_owned(), 0))
}

/// Where each base's search for a free `base-N` starts: every suffix below it was taken when
/// last looked at, and none of those names was freed since. With many media of one label, a
/// name then costs a lookup or two rather than one per name given before (quadratic).
#[derive(Clone, Debug, Default)]
pub struct Suffixes(HashMap<String, u64>);

impl Suffixes {
    /// [`first_free`], starting at `base`'s hint, which then moves past the name given.
    pub fn first_free(&mut self, base: &str, taken: impl Fn(&str) -> bool) -> String {
        let from = self.0.get(base).copied().unwrap_or(2);
        let (name, n) = first_free_from(base, from, taken);
        if n >= 2 {
            self.0.insert(base.to_owned(), n + 1);
        }
        name
    }

    /// `name` is no longer taken: a search for the base it is a suffixed form of must look at
    /// it again. A name of the longest length may be a longer base's cut form: those bases
    /// search from -2 again.
    pub fn freed(&mut self, name: &str) {
        if self.0.is_empty() {
            return;
        }
        let Some((prefix, digits)) = name.rsplit_once('-') else {
            return;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return;
        }
        if let (Some(hint), Ok(n)) = (self.0.get_mut(prefix), digits.parse::<u64>()) {
            *hint = (*hint).min(n);
        }
        if name.len() >= MAX_NAME_LEN {
            self.0.retain(|base, _| !base.starts_with(prefix));
        }
    }

    /// Any name may have come free: every search starts at -2 again.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The suffix `base`'s next search starts at, if it has one.
    pub fn get(&self, base: &str) -> Option<&u64> {
        self.0.get(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_labels_each_give_one_safe_name() {
        let lossy = String::from_utf8_lossy(b"\xff\xfeabc\xc3").into_owned();
        let cases: &[(&str, Option<&str>)] = &[
            ("Rocky-9.2-x86_64-dvd", Some("Rocky-9.2-x86_64-dvd")),
            ("Rocky 9 / x86_64", Some("Rocky_9_x86_64")),
            ("/", None),
            (".", None),
            ("..", None),
            ("", None),
            ("a/../../etc", Some("a_.._.._etc")),
            ("-rf", Some("rf")),
            ("..hidden", Some("hidden")),
            ("tab\there\x07bell", Some("tab_here_bell")),
            ("quote'\"back\\slash", Some("quote_back_slash")),
            ("Über Disc", Some("_ber_Disc")),
            ("___", None),
            ("Disc   ", Some("Disc_")),
            (&lossy, Some("_abc_")),
            ("\u{0}\u{1b}[31mred", Some("_31mred")),
        ];
        for (label, want) in cases {
            assert_eq!(sanitize(label).as_deref(), *want, "label {label:?}");
        }
    }

    #[test]
    fn long_labels_are_cut_to_200_bytes() {
        let name = sanitize(&"x".repeat(300)).unwrap();
        assert_eq!(name.len(), MAX_NAME_LEN);
    }

    #[test]
    fn falls_back_to_stem_then_medium() {
        assert_eq!(base_name(None, "my image"), "my_image");
        assert_eq!(base_name(Some("   "), "ubuntu"), "ubuntu");
        assert_eq!(base_name(Some("///"), "***"), "medium");
    }

    #[test]
    fn collisions_take_the_lowest_free_suffix() {
        let taken = ["A", "A-2", "A-4"];
        assert_eq!(first_free("A", |n| taken.contains(&n)), "A-3");
        assert_eq!(first_free("B", |n| taken.contains(&n)), "B");
        let long = "y".repeat(MAX_NAME_LEN);
        let got = first_free(&long, |n| n == long);
        assert_eq!(got.len(), MAX_NAME_LEN);
        assert!(got.ends_with("-2"));
    }
}
