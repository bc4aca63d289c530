//! "Did you mean ...?"

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos() {
        let keys = ["instance_type", "region", "subnet_id"];
        assert_eq!(super::did_you_mean("instnce_type", keys), Some("instance_type"));
        assert_eq!(super::did_you_mean("regoin", keys), Some("region"));
        assert_eq!(super::did_you_mean("zzz", keys), None);
    }
}
