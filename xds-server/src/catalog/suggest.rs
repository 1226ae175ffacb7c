//! "Did you mean": the nearest valid name for a misspelt field or variant.

/// The candidate closest to `word` by edit distance (a transposition counts once), if it is
/// close enough to be a slip: at most one edit in a short name, two in a longer one.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), with the
/// nearest expected name suggested; other messages as they are. Names in `refused` (fields
/// that exist but may not be set where the error is) are neither listed nor proposed.
pub fn with_suggestion(message: &str, refused: &[&str]) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_string();
    };
    let Some((word, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let all: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let candidates: Vec<&str> = all
        .iter()
        .copied()
        .filter(|c| !refused.contains(c))
        .collect();
    let message = if candidates.len() == all.len() {
        message.to_string()
    } else {
        let head = &message[..message.len() - rest.len() + word.len() + 1];
        let quoted: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
        match quoted.as_slice() {
            [one] => format!("{head}, expected {one}"),
            _ => format!("{head}, expected one of {}", quoted.join(", ")),
        }
    };
    match nearest(word, candidates) {
        Some(best) => format!("{message} (did you mean `{best}`?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slips_get_the_nearest_name_and_strangers_none() {
        let fields = ["connect_timeout", "route_timeout", "retries"];
        assert_eq!(nearest("conect_timeout", fields), Some("connect_timeout"));
        assert_eq!(nearest("route_timoeut", fields), Some("route_timeout"));
        assert_eq!(nearest("retires", fields), Some("retries"));
        assert_eq!(nearest("colour", fields), None);
        assert_eq!(nearest("tpc", ["tcp", "http", "grpc"]), Some("tcp"));
        assert_eq!(nearest("udp", ["tcp", "http", "grpc"]), None);
    }

    #[test]
    fn serde_messages_get_a_suggestion() {
        assert_eq!(
            with_suggestion(
                "unknown field `conect_timeout`, expected one of `connect_timeout`, `route_timeout`",
                &[]
            ),
            "unknown field `conect_timeout`, expected one of `connect_timeout`, `route_timeout` (did you mean `connect_timeout`?)"
        );
        assert_eq!(
            with_suggestion("unknown variant `htpp`, expected one of `http`, `tcp`", &[]),
            "unknown variant `htpp`, expected one of `http`, `tcp` (did you mean `http`?)"
        );
        let far = "unknown field `colour`, expected `version`";
        assert_eq!(with_suggestion(far, &[]), far);
        assert_eq!(with_suggestion("invalid type", &[]), "invalid type");
    }

    #[test]
    fn refused_fields_are_neither_listed_nor_proposed() {
        let message = "unknown field `mirorr`, expected one of `match`, `to`, `mirror`, `retries`";
        assert_eq!(
            with_suggestion(message, &["mirror"]),
            "unknown field `mirorr`, expected one of `match`, `to`, `retries`"
        );
        assert_eq!(
            with_suggestion(
                "unknown field `prot`, expected one of `name`, `port`",
                &["port"]
            ),
            "unknown field `prot`, expected `name`"
        );
    }
}
