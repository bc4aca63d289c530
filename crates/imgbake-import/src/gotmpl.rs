//! Packer's Go template functions (`{{user `x`}}`, `{{timestamp}}`, `{{isotime "2006-01-02"}}`…)
//! in imgbake's template language (`{{ var.x }}`, `{{ timestamp }}`, `{{ isotime "%Y-%m-%d" }}`).
//!
//! `{{ .Vars }}` and `{{ .Path }}` (an `execute_command`'s) become `{{vars}}` and `{{path}}`; the
//! step translation turns the `{{path}}` marker into imgbake's `{{command}}`.

/// What a template may refer to while being converted.
#[derive(Debug, Clone, Default)]
pub struct Cx {
    /// `{{template_dir}}` / `path.root`: where the template lives (a path, rewritten later).
    pub template_dir: String,
}

/// Converts every `{{ … }}` action of `s`; the error says which action has no counterpart, and why.
pub fn convert(s: &str, cx: &Cx) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("an unclosed `{{`".into());
        };
        let action = after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim();
        out.push_str(&action_to_hbs(action, cx)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn action_to_hbs(action: &str, cx: &Cx) -> Result<String, String> {
    match action {
        ".Vars" => return Ok("{{vars}}".into()),
        ".Path" => return Ok("{{path}}".into()),
        "template_dir" => return Ok(cx.template_dir.clone()),
        "pwd" => return Ok(".".into()),
        _ => {}
    }
    if let Some(field) = action.strip_prefix('.') {
        return Err(format!(
            "`{{{{ .{field} }}}}` is a value Packer's plugin fills in at build time; imgbake has no such value (see docs/configuration.md, Templates)"
        ));
    }
    let stages = split_top(action, '|');
    let mut expr: Option<String> = None;
    for stage in stages {
        let words = words(stage.trim())?;
        let mut args: Vec<String> = words[1..].iter().map(|w| arg(w, cx)).collect::<Result<_, _>>()?;
        if let Some(prev) = expr.take() {
            // A piped-in helper call is a subexpression; a path is passed as is.
            let path = ["var.", "image.", "parent.", "build.", "tree."].iter().any(|p| prev.starts_with(p))
                && !prev.contains(' ');
            args.push(if path || prev.starts_with('"') { prev } else { format!("({prev})") });
        }
        expr = Some(func(&words[0], &args)?);
    }
    let expr = expr.ok_or_else(|| "an empty `{{ }}`".to_string())?;
    Ok(format!("{{{{ {expr} }}}}"))
}

/// One function call in imgbake's language (arguments already converted).
fn func(name: &str, args: &[String]) -> Result<String, String> {
    let unquote = |s: &String| s.trim_matches('"').to_string();
    Ok(match (name, args.len()) {
        ("user", 1) => format!("var.{}", var_name(&unquote(&args[0]))),
        ("env", 1) => format!("env {} \"\"", args[0]),
        ("timestamp", 0) => "timestamp".into(),
        ("uuid", 0) => "uuid".into(),
        ("isotime", 0) => "isotime".into(),
        ("isotime", 1) => format!("isotime \"{}\"", go_layout(&unquote(&args[0]))),
        ("clean_resource_name" | "clean_ami_name" | "clean_image_name", 1) => format!("clean_name {}", args[0]),
        ("lower" | "upper", 1) => format!("{name} {}", args[0]),
        ("replace_all", 3) => format!("replace {} {} {}", args[2], args[0], args[1]),
        ("replace", 4) if args[2] == "-1" => format!("replace {} {} {}", args[3], args[0], args[1]),
        ("build_name", 0) => "image.name".into(),
        ("build_type", 0) => return Err("`build_type`: write the builder's name instead".into()),
        ("split", _) | ("sed", _) => {
            return Err(format!(
                "`{name}` has no imgbake template helper yet; compute the value outside and pass it with --var"
            ));
        }
        ("vault" | "consul_key" | "aws_secretsmanager", _) => {
            return Err(format!(
                "`{name}` reads a secret store while templating; imgbake takes secrets from sensitive variables (`--var`, `IMGBAKE_VAR_x`): fetch it in CI and pass it in"
            ));
        }
        _ => return Err(format!("`{name}` with {} argument(s) has no imgbake counterpart", args.len())),
    })
}

/// A variable name imgbake accepts (letters, digits, `_`): Packer allows `-`.
pub fn var_name(raw: &str) -> String {
    let mut s: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

fn arg(word: &str, cx: &Cx) -> Result<String, String> {
    if let Some(inner) = word.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
        return Ok(format!("\"{}\"", inner.replace('"', "\\\"")));
    }
    if word.starts_with('"') {
        return Ok(word.to_string());
    }
    if let Some(inner) = word.strip_prefix('(').and_then(|w| w.strip_suffix(')')) {
        let inner = action_to_hbs(inner.trim(), cx)?;
        return Ok(format!("({})", inner.trim_start_matches("{{ ").trim_end_matches(" }}")));
    }
    if word.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return Ok(word.to_string());
    }
    // A bare function name used as an argument: `{{ clean_resource_name timestamp }}` is not Go
    // template syntax, but `(timestamp)` is what was meant.
    Ok(format!("({})", func(word, &[])?))
}

/// Splits at `sep` outside quotes, backticks and parentheses.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut quote, mut start, mut out) = (0i32, None::<char>, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Words of one call: a function name, then arguments (quoted strings, backtick strings,
/// parenthesised calls, numbers, bare words).
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match c {
            '"' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' && c == '"' { 2 } else { 1 };
                }
                i += 1;
            }
            '(' => {
                let mut depth = 0;
                while i < chars.len() {
                    match chars[i] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
            }
        }
        out.push(chars[start..i.min(chars.len())].iter().collect());
    }
    if out.is_empty() {
        return Err("an empty `{{ }}`".into());
    }
    Ok(out)
}

/// Go's reference-time layout (`2006-01-02T15:04:05Z07:00`) as strftime.
pub fn go_layout(layout: &str) -> String {
    const TOKENS: &[(&str, &str)] = &[
        ("January", "%B"),
        ("Monday", "%A"),
        ("2006", "%Y"),
        ("Z07:00", "%:z"),
        ("-0700", "%z"),
        ("-07:00", "%:z"),
        ("Jan", "%b"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        ("01", "%m"),
        ("02", "%d"),
        ("15", "%H"),
        ("03", "%I"),
        ("04", "%M"),
        ("05", "%S"),
        ("06", "%y"),
        ("PM", "%p"),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (go, strf) in TOKENS {
            if let Some(r) = rest.strip_prefix(go) {
                out.push_str(strf);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// HCL's `formatdate` spec (`YYYY-MM-DD'T'hh:mm:ssZ`) as strftime.
pub fn hcl_date_spec(spec: &str) -> Result<String, String> {
    const TOKENS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("YY", "%y"),
        ("MMMM", "%B"),
        ("MMM", "%b"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("EEEE", "%A"),
        ("EEE", "%a"),
        ("hh", "%H"),
        ("HH", "%I"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("AA", "%p"),
        ("ZZZZZ", "%:z"),
        ("ZZZZ", "%z"),
        ("ZZZ", "UTC"),
        ("Z", "Z"),
    ];
    let mut out = String::new();
    let mut rest = spec;
    'outer: while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'').ok_or("an unclosed quote in the formatdate spec")?;
            out.push_str(&r[..end].replace('%', "%%"));
            rest = &r[end + 1..];
            continue;
        }
        for (tok, strf) in TOKENS {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(strf);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        if c.is_ascii_alphabetic() {
            return Err(format!("the formatdate letter `{c}` has no strftime counterpart"));
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        convert(s, &Cx { template_dir: "/t".into() }).unwrap()
    }

    #[test]
    fn packer_functions_become_imgbake_helpers() {
        assert_eq!(c("{{ user `vm_name` }}"), "{{ var.vm_name }}");
        assert_eq!(c("{{user \"aws-region\"}}"), "{{ var.aws_region }}");
        assert_eq!(c("web-{{timestamp}}"), "web-{{ timestamp }}");
        assert_eq!(c("b-{{isotime \"2006-01-02T1504\"}}"), "b-{{ isotime \"%Y-%m-%dT%H%M\" }}");
        assert_eq!(c("{{env `AWS_REGION`}}"), "{{ env \"AWS_REGION\" \"\" }}");
        assert_eq!(c("{{isotime | clean_resource_name}}"), "{{ clean_name (isotime) }}");
        assert_eq!(c("{{user `v` | clean_resource_name}}"), "{{ clean_name var.v }}");
        assert_eq!(c("{{ clean_resource_name (isotime \"2006\") }}"), "{{ clean_name (isotime \"%Y\") }}");
        assert_eq!(c("{{template_dir}}/x.sh"), "/t/x.sh");
        assert_eq!(c("{{ .Vars }} sudo -E sh '{{ .Path }}'"), "{{vars}} sudo -E sh '{{path}}'");
        assert_eq!(c("{{build_name}}-x"), "{{ image.name }}-x");
    }

    #[test]
    fn what_has_no_counterpart_says_why() {
        let cx = Cx::default();
        assert!(convert("{{ .SourceAMIName }}", &cx).unwrap_err().contains("SourceAMIName"));
        assert!(convert("{{ vault `/secret` `k` }}", &cx).unwrap_err().contains("sensitive variables"));
        assert!(convert("{{ user `x` ", &cx).is_err());
    }

    #[test]
    fn date_layouts() {
        assert_eq!(go_layout("20060102150405"), "%Y%m%d%H%M%S");
        assert_eq!(hcl_date_spec("YYYY-MM-DD'T'hh-mm").unwrap(), "%Y-%m-%dT%H-%M");
    }
}
