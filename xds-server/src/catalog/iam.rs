//! `proxies.NAME.identity.iam_roles`: the IAM roles whose tasks may speak for a proxy.

/// One entry of `iam_roles`: a role name, in the control plane's own AWS account, or a role ARN
/// (any account; a path in it is allowed and ignored, as an assumed role's ARN carries none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamRole {
    /// `connector-task-role`.
    Name(String),
    /// `arn:aws:iam::123456789012:role/connector-task-role`.
    Arn {
        /// `aws`, `aws-cn`, `aws-us-gov`.
        partition: String,
        /// The 12-digit account.
        account: String,
        /// The role's name (the last part of the ARN).
        name: String,
    },
}

/// IAM's role-name alphabet: letters, digits and `+=,.@_-`, 1 to 64 characters.
fn role_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

impl IamRole {
    /// Reads an entry, or says what is wrong with it.
    pub fn parse(entry: &str) -> Result<IamRole, String> {
        let Some(rest) = entry.strip_prefix("arn:") else {
            return if role_name_ok(entry) {
                Ok(IamRole::Name(entry.to_string()))
            } else {
                Err(format!(
                    "{entry:?} is neither an IAM role name (letters, digits, +=,.@_-) nor a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                ))
            };
        };
        let bad =
            || format!("{entry:?} is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)");
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, "iam", "", account, resource] = parts.as_slice() else {
            return Err(bad());
        };
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(bad());
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if partition.is_empty()
            || account.len() != 12
            || !account.chars().all(|c| c.is_ascii_digit())
            || !role_name_ok(name)
        {
            return Err(bad());
        }
        Ok(IamRole::Arn {
            partition: partition.to_string(),
            account: account.to_string(),
            name: name.to_string(),
        })
    }

    /// Whether a caller that assumed role `name` of `account` in `partition` is this role; a
    /// bare name matches only in `home_account`, the control plane's own. Names compare
    /// without regard to ASCII case, as IAM keeps them unique.
    pub fn matches(
        &self,
        partition: &str,
        account: &str,
        name: &str,
        home_account: Option<&str>,
    ) -> bool {
        match self {
            IamRole::Name(n) => n.eq_ignore_ascii_case(name) && home_account == Some(account),
            IamRole::Arn {
                partition: p,
                account: a,
                name: n,
            } => p == partition && a == account && n.eq_ignore_ascii_case(name),
        }
    }

    /// Whether matching this entry needs the control plane's own account.
    pub fn needs_home_account(&self) -> bool {
        matches!(self, IamRole::Name(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert_eq!(
            IamRole::parse("connector-task-role"),
            Ok(IamRole::Name("connector-task-role".into()))
        );
        let arn = IamRole::parse("arn:aws:iam::123456789012:role/team/x").unwrap();
        assert_eq!(
            arn,
            IamRole::Arn {
                partition: "aws".into(),
                account: "123456789012".into(),
                name: "x".into()
            }
        );
        for bad in [
            "",
            "has space",
            "arn:aws:iam::123:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:sts::123456789012:assumed-role/x/s",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(IamRole::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_name_matches_only_in_the_home_account() {
        let name = IamRole::Name("r".into());
        assert!(name.matches("aws", "111111111111", "r", Some("111111111111")));
        assert!(name.matches("aws", "111111111111", "R", Some("111111111111")));
        // The same name in another account is another role.
        assert!(!name.matches("aws", "222222222222", "r", Some("111111111111")));
        assert!(!name.matches("aws", "111111111111", "r", None));
        assert!(!name.matches("aws", "111111111111", "other", Some("111111111111")));
        let arn = IamRole::parse("arn:aws:iam::222222222222:role/path/r").unwrap();
        assert!(arn.matches("aws", "222222222222", "r", None));
        assert!(!arn.matches("aws-cn", "222222222222", "r", None));
        assert!(!arn.matches("aws", "111111111111", "r", None));
    }
}
