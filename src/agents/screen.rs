//! Screen rules: for agents whose CLI has no hooks, what the emulated screen shows when the
//! agent waits for input or for a permission. Pure: screen text in, an activity out.

use regex::Regex;

use super::activity::Activity;
use crate::config::ScreenRule;

/// An agent type's rules, compiled.
#[derive(Debug, Clone)]
pub struct ScreenRules {
    rules: Vec<(String, Regex, Activity)>,
}

impl ScreenRules {
    /// Compiles `rules`; fails on a bad pattern or activity, naming the rule.
    pub fn compile(rules: &[ScreenRule]) -> Result<ScreenRules, String> {
        let rules = rules
            .iter()
            .map(|rule| {
                let regex =
                    Regex::new(&rule.pattern).map_err(|e| format!("rule {:?}: {e}", rule.name))?;
                let activity = match Activity::parse(&rule.activity) {
                    Some(
                        a @ (Activity::WaitingInput | Activity::NeedsApproval | Activity::Working),
                    ) => a,
                    _ => {
                        return Err(format!(
                            "rule {:?}: activity must be waiting_input, needs_approval or working",
                            rule.name
                        ));
                    }
                };
                Ok((rule.name.clone(), regex, activity))
            })
            .collect::<Result<_, String>>()?;
        Ok(ScreenRules { rules })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that matches `screen`: its activity and name.
    pub fn classify(&self, screen: &str) -> Option<(Activity, &str)> {
        self.rules
            .iter()
            .find(|(_, regex, _)| regex.is_match(screen))
            .map(|(name, _, activity)| (*activity, name.as_str()))
    }
}

/// The lines of `after` that `before` did not show (blank ones left out), in order: what a
/// turn added to the screen.
pub fn added_lines(before: &str, after: &str) -> String {
    let seen: std::collections::HashSet<&str> = before.lines().map(str::trim_end).collect();
    after
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty() && !seen.contains(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_the_configuration_accepts_compiles() {
        let rule = |pattern: &str, activity: &str| ScreenRule {
            name: "r".into(),
            pattern: pattern.into(),
            activity: activity.into(),
        };
        let mut rules: Vec<ScreenRule> = crate::config::Config::default()
            .agents
            .into_values()
            .flat_map(|a| a.screen_rules)
            .collect();
        rules.extend(
            ScreenRule::ACTIVITIES
                .iter()
                .map(|activity| rule("(?m)^> $", activity)),
        );
        for rule in &rules {
            assert!(rule.check().is_ok(), "{rule:?}");
            assert!(
                ScreenRules::compile(std::slice::from_ref(rule)).is_ok(),
                "{rule:?}"
            );
        }
        for bad in [rule("(", "working"), rule("x", "idle")] {
            assert!(bad.check().is_err(), "{bad:?}");
            assert!(
                ScreenRules::compile(std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    fn rule(name: &str, pattern: &str, activity: &str) -> ScreenRule {
        ScreenRule {
            name: name.into(),
            pattern: pattern.into(),
            activity: activity.into(),
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_bad_rules_are_refused() {
        let rules = ScreenRules::compile(&[
            rule(
                "permission dialog",
                r"Do you want to proceed\?",
                "needs_approval",
            ),
            rule("busy", r"esc to interrupt", "working"),
            rule("prompt", r"(?m)^> $", "waiting_input"),
        ])
        .unwrap();
        assert_eq!(
            rules.classify("Bash command\nDo you want to proceed?\n> "),
            Some((Activity::NeedsApproval, "permission dialog"))
        );
        assert_eq!(
            rules.classify("thinking (esc to interrupt)\n> "),
            Some((Activity::Working, "busy"))
        );
        assert_eq!(
            rules.classify("done\n> "),
            Some((Activity::WaitingInput, "prompt"))
        );
        assert_eq!(rules.classify("nothing"), None);
        assert!(ScreenRules::compile(&[rule("bad", "(", "working")]).is_err());
        assert!(ScreenRules::compile(&[rule("bad", "x", "idle")]).is_err());
    }

    #[test]
    fn a_turn_is_what_it_added_to_the_screen() {
        let before = "banner\n> \n";
        let after = "banner\n> hello\n\n* Hi there.\n> ";
        assert_eq!(added_lines(before, after), "> hello\n* Hi there.");
    }
}
