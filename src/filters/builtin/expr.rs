//! The expression language of `route_when` rules: a condition on a request's context and
//! parameters, parsed once when the config is loaded ([`Expr::parse`]) and evaluated per request
//! ([`Expr::eval`]) without allocating.
//!
//! - Literals: strings in double or single quotes (escapes `\\ \" \' \n \t \r`), integers
//!   (`42`, `-1`), floats (`0.5`, `1e3`), `true`, `false`, `null`.
//! - Names: `key` (the client key's configured name, or `null` without client auth), `dialect`
//!   (`"openai"`, `"anthropic"`, `"responses"`, `"completions"`), `model` (as routed so far),
//!   `stream` (bool), `estimated_tokens` (int: prompt at ~4 bytes a token plus output budget),
//!   `header["x-tier"]` (case-insensitive, first value; missing → `null`), `metadata["k"]` or
//!   `metadata.k` (missing → `null`), `param["temperature"]` or `param.temperature` with
//!   `temperature`, `top_p` (float or `null`), `max_tokens` (the output budget:
//!   `max_completion_tokens`, else `max_tokens`; int or `null`), `reasoning_effort` (string or
//!   `null`), `tools`, `messages` (counts). Any other name is an error at load.
//! - Operators, loosest first: `||`; `&&`; `!` (negates the comparison after it: `!model ==
//!   "a"` is `!(model == "a")`); the comparisons `==`, `!=`, `<`, `<=`, `>`, `>=`, `in` (a list
//!   of literals: `dialect in ["openai", "responses"]`), `contains` (substring),
//!   `starts_with`, `matches` (a regular expression, which must be a string literal, compiled at
//!   load; unanchored: use `^...$` for a whole match). Comparisons do not chain; parentheses
//!   group.
//! - `==` and `!=` compare any two values: different types are not equal (integers and floats
//!   compare as numbers), `null == null`; objects and lists from metadata equal nothing.
//! - Type errors are false, never an error: `<` between a number and a string or `null`,
//!   `contains`/`starts_with`/`matches` on a non-string (a missing header), and a condition that
//!   is not a boolean (`header["x"] && ...`). `!` of such a comparison is true.
//! - Errors at load name the column (counted in characters from 1).

use std::fmt;

use http::{HeaderMap, HeaderName};
use regex::Regex;
use serde_json::{Map, Value as Json};

use crate::chat;
use crate::filters::FilterRequest;

/// Nesting deeper than this is refused at load (it would only be a typo or an attack on the
/// stack).
const MAX_DEPTH: usize = 64;

/// A load-time error in an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where, in characters from 1.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        column,
        message: message.into(),
    })
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Lit {
    fn val(&self) -> Val<'_> {
        match self {
            Lit::Null => Val::Null,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(i) => Val::Int(*i),
            Lit::Float(f) => Val::Float(*f),
            Lit::Str(s) => Val::Str(s),
        }
    }
}

/// A canonical parameter `param[...]` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Temperature,
    TopP,
    MaxTokens,
    ReasoningEffort,
    Tools,
    Messages,
}

const PARAMS: [(&str, Param); 6] = [
    ("temperature", Param::Temperature),
    ("top_p", Param::TopP),
    ("max_tokens", Param::MaxTokens),
    ("reasoning_effort", Param::ReasoningEffort),
    ("tools", Param::Tools),
    ("messages", Param::Messages),
];

impl Param {
    fn as_str(self) -> &'static str {
        PARAMS
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("", |(name, _)| name)
    }
}

/// A name of the request's context.
#[derive(Debug, Clone, PartialEq)]
pub enum Name {
    Key,
    Dialect,
    Model,
    Stream,
    EstimatedTokens,
    /// Lowercase, as parsed.
    Header(HeaderName),
    Metadata(String),
    Param(Param),
}

/// A comparison between two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
            CmpOp::StartsWith => "starts_with",
        }
    }
}

/// A parsed expression. Its `Display` is fully parenthesised (how it was understood).
#[derive(Debug, Clone)]
pub enum Expr {
    Lit(Lit),
    Name(Name),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Lit>),
    Matches(Box<Expr>, Regex),
}

/// A value during evaluation, borrowing from the expression or the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// A metadata object or list: equal to nothing.
    Other,
}

/// What an expression reads of one request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub key: Option<&'a str>,
    pub dialect: &'a str,
    pub model: &'a str,
    pub stream: bool,
    pub estimated_tokens: u64,
    pub headers: &'a HeaderMap,
    pub metadata: &'a Map<String, Json>,
    /// The canonical request, for `param[...]`; without it every param is `null`.
    pub params: Option<&'a chat::Request<'a>>,
}

impl<'a> Context<'a> {
    /// The context of a filtered request; `params` is its canonical form, needed only when
    /// [`Expr::uses_params`].
    pub fn of(request: &'a FilterRequest, params: Option<&'a chat::Request<'a>>) -> Self {
        Context {
            key: request.info.key.as_deref(),
            dialect: request.info.dialect.as_str(),
            model: request.model(),
            stream: request.stream(),
            estimated_tokens: request.estimated_tokens(),
            headers: &request.info.headers,
            metadata: &request.info.metadata,
            params,
        }
    }
}

impl Expr {
    /// Parses an expression; the error names the column.
    pub fn parse(source: &str) -> Result<Expr, ParseError> {
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let expr = parser.or()?;
        let token = parser.peek();
        if token.tok != Tok::End {
            return err(token.col, format!("unexpected {}", token.tok.describe()));
        }
        Ok(expr)
    }

    /// Whether the expression reads `param[...]` (and so needs the canonical request).
    pub fn uses_params(&self) -> bool {
        match self {
            Expr::Lit(_) => false,
            Expr::Name(name) => matches!(name, Name::Param(_)),
            Expr::Not(e) | Expr::In(e, _) | Expr::Matches(e, _) => e.uses_params(),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                a.uses_params() || b.uses_params()
            }
        }
    }

    /// Whether the expression is true for this request (type errors are false).
    pub fn eval(&self, ctx: &Context<'_>) -> bool {
        matches!(self.value(ctx), Val::Bool(true))
    }

    fn value<'a>(&'a self, ctx: &Context<'a>) -> Val<'a> {
        match self {
            Expr::Lit(lit) => lit.val(),
            Expr::Name(name) => lookup(name, ctx),
            Expr::Not(e) => Val::Bool(!e.eval(ctx)),
            Expr::And(a, b) => Val::Bool(a.eval(ctx) && b.eval(ctx)),
            Expr::Or(a, b) => Val::Bool(a.eval(ctx) || b.eval(ctx)),
            Expr::Cmp(op, a, b) => Val::Bool(compare(*op, a.value(ctx), b.value(ctx))),
            Expr::In(e, list) => {
                let v = e.value(ctx);
                Val::Bool(list.iter().any(|lit| equal(v, lit.val())))
            }
            Expr::Matches(e, re) => Val::Bool(match e.value(ctx) {
                Val::Str(s) => re.is_match(s),
                _ => false,
            }),
        }
    }
}

fn lookup<'a>(name: &'a Name, ctx: &Context<'a>) -> Val<'a> {
    match name {
        Name::Key => ctx.key.map_or(Val::Null, Val::Str),
        Name::Dialect => Val::Str(ctx.dialect),
        Name::Model => Val::Str(ctx.model),
        Name::Stream => Val::Bool(ctx.stream),
        Name::EstimatedTokens => Val::Int(i64::try_from(ctx.estimated_tokens).unwrap_or(i64::MAX)),
        Name::Header(header) => match ctx.headers.get(header) {
            None => Val::Null,
            Some(v) => std::str::from_utf8(v.as_bytes()).map_or(Val::Other, Val::Str),
        },
        Name::Metadata(key) => ctx.metadata.get(key).map_or(Val::Null, json_val),
        Name::Param(param) => ctx.params.map_or(Val::Null, |r| param_val(*param, r)),
    }
}

fn json_val(v: &Json) -> Val<'_> {
    match v {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Val::Int(i),
            None => n.as_f64().map_or(Val::Other, Val::Float),
        },
        Json::String(s) => Val::Str(s),
        Json::Array(_) | Json::Object(_) => Val::Other,
    }
}

fn param_val<'a>(param: Param, r: &'a chat::Request<'a>) -> Val<'a> {
    let count = |n: usize| Val::Int(i64::try_from(n).unwrap_or(i64::MAX));
    match param {
        Param::Temperature => r.temperature.map_or(Val::Null, Val::Float),
        Param::TopP => r.top_p.map_or(Val::Null, Val::Float),
        Param::MaxTokens => r.max_output_tokens().map_or(Val::Null, |n| {
            Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
        }),
        Param::ReasoningEffort => r.reasoning_effort.as_deref().map_or(Val::Null, Val::Str),
        Param::Tools => count(r.tools.as_ref().map_or(0, Vec::len)),
        Param::Messages => count(r.messages.len()),
    }
}

fn equal(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Int(x), Val::Float(y)) | (Val::Float(y), Val::Int(x)) => x as f64 == y,
        (Val::Float(x), Val::Float(y)) => x == y,
        _ => false,
    }
}

fn order(a: Val<'_>, b: Val<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(&y)),
        (Val::Int(x), Val::Float(y)) => (x as f64).partial_cmp(&y),
        (Val::Float(x), Val::Int(y)) => x.partial_cmp(&(y as f64)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(&y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare(op: CmpOp, a: Val<'_>, b: Val<'_>) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        CmpOp::Lt => order(a, b) == Some(Less),
        CmpOp::Le => matches!(order(a, b), Some(Less | Equal)),
        CmpOp::Gt => order(a, b) == Some(Greater),
        CmpOp::Ge => matches!(order(a, b), Some(Greater | Equal)),
        CmpOp::Contains => matches!((a, b), (Val::Str(x), Val::Str(y)) if x.contains(y)),
        CmpOp::StartsWith => matches!((a, b), (Val::Str(x), Val::Str(y)) if x.starts_with(y)),
    }
}

// ---- Display: fully parenthesised ----

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Null => f.write_str("null"),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Int(i) => write!(f, "{i}"),
            Lit::Float(x) => write!(f, "{x:?}"),
            Lit::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Key => f.write_str("key"),
            Name::Dialect => f.write_str("dialect"),
            Name::Model => f.write_str("model"),
            Name::Stream => f.write_str("stream"),
            Name::EstimatedTokens => f.write_str("estimated_tokens"),
            Name::Header(h) => write!(f, "header[{:?}]", h.as_str()),
            Name::Metadata(k) => write!(f, "metadata[{k:?}]"),
            Name::Param(p) => write!(f, "param[{:?}]", p.as_str()),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit(lit) => write!(f, "{lit}"),
            Expr::Name(name) => write!(f, "{name}"),
            Expr::Not(e) => write!(f, "!{e}"),
            Expr::And(a, b) => write!(f, "({a} && {b})"),
            Expr::Or(a, b) => write!(f, "({a} || {b})"),
            Expr::Cmp(op, a, b) => write!(f, "({a} {} {b})", op.as_str()),
            Expr::In(e, list) => {
                write!(f, "({e} in [")?;
                for (i, lit) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{lit}")?;
                }
                f.write_str("])")
            }
            Expr::Matches(e, re) => write!(f, "({e} matches {:?})", re.as_str()),
        }
    }
}

// ---- Lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok<'s> {
    Str(String),
    Int(i64),
    Float(f64),
    Ident(&'s str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Not,
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Minus,
    End,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        let symbol = match self {
            Tok::Str(s) => return format!("string {s:?}"),
            Tok::Int(i) => return format!("number {i}"),
            Tok::Float(x) => return format!("number {x:?}"),
            Tok::Ident(w) => return format!("'{w}'"),
            Tok::End => return "end of expression".to_string(),
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Not => "!",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Minus => "-",
        };
        format!("'{symbol}'")
    }
}

#[derive(Debug, Clone)]
struct Token<'s> {
    tok: Tok<'s>,
    /// In characters from 1.
    col: usize,
}

fn lex(source: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte = |i: usize| chars.get(i).map_or(source.len(), |&(b, _)| b);
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let col = i + 1;
        let two = |tok: Tok<'static>| (tok, 2);
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            ',' => (Tok::Comma, 1),
            '.' => (Tok::Dot, 1),
            '-' => (Tok::Minus, 1),
            '=' if at(i + 1) == Some('=') => two(Tok::Eq),
            '=' => return err(col, "'=' is not an operator; use '=='"),
            '!' if at(i + 1) == Some('=') => two(Tok::Ne),
            '!' => (Tok::Not, 1),
            '<' if at(i + 1) == Some('=') => two(Tok::Le),
            '<' => (Tok::Lt, 1),
            '>' if at(i + 1) == Some('=') => two(Tok::Ge),
            '>' => (Tok::Gt, 1),
            '&' if at(i + 1) == Some('&') => two(Tok::And),
            '&' => return err(col, "'&' is not an operator; use '&&'"),
            '|' if at(i + 1) == Some('|') => two(Tok::Or),
            '|' => return err(col, "'|' is not an operator; use '||'"),
            '"' | '\'' => {
                let mut text = String::new();
                let mut j = i + 1;
                loop {
                    match at(j) {
                        None => return err(col, "unterminated string"),
                        Some(q) if q == c => break,
                        Some('\\') => {
                            let escaped = match at(j + 1) {
                                Some('\\') => '\\',
                                Some('"') => '"',
                                Some('\'') => '\'',
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some(other) => {
                                    return err(j + 1, format!("unknown escape '\\{other}'"))
                                }
                                None => return err(col, "unterminated string"),
                            };
                            text.push(escaped);
                            j += 2;
                        }
                        Some(other) => {
                            text.push(other);
                            j += 1;
                        }
                    }
                }
                (Tok::Str(text), j + 1 - i)
            }
            c if c.is_ascii_digit() => {
                let mut j = i;
                while at(j).is_some_and(|c| c.is_ascii_digit()) {
                    j += 1;
                }
                let mut float = false;
                if at(j) == Some('.') && at(j + 1).is_some_and(|c| c.is_ascii_digit()) {
                    float = true;
                    j += 1;
                    while at(j).is_some_and(|c| c.is_ascii_digit()) {
                        j += 1;
                    }
                }
                if matches!(at(j), Some('e' | 'E')) {
                    let digits_at = if matches!(at(j + 1), Some('+' | '-')) {
                        j + 2
                    } else {
                        j + 1
                    };
                    if at(digits_at).is_some_and(|c| c.is_ascii_digit()) {
                        float = true;
                        j = digits_at;
                        while at(j).is_some_and(|c| c.is_ascii_digit()) {
                            j += 1;
                        }
                    }
                }
                if at(j).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    return err(j + 1, "a number must not run into a name");
                }
                let text = &source[byte(i)..byte(j)];
                let tok = if float {
                    match text.parse::<f64>() {
                        Ok(x) if x.is_finite() => Tok::Float(x),
                        _ => return err(col, format!("number {text} is out of range")),
                    }
                } else {
                    match text.parse::<i64>() {
                        Ok(n) => Tok::Int(n),
                        Err(_) => return err(col, format!("integer {text} is out of range")),
                    }
                };
                (tok, j - i)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while at(j).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    j += 1;
                }
                (Tok::Ident(&source[byte(i)..byte(j)]), j - i)
            }
            other => return err(col, format!("unexpected character '{other}'")),
        };
        tokens.push(Token { tok, col });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::End,
        col: chars.len() + 1,
    });
    Ok(tokens)
}

// ---- Parser ----

struct Parser<'s> {
    tokens: Vec<Token<'s>>,
    pos: usize,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Token<'s> {
        // The last token is always `End`, and `next` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token<'s> {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn expect(&mut self, tok: Tok<'static>, what: &str) -> Result<(), ParseError> {
        let token = self.next();
        if token.tok == tok {
            Ok(())
        } else {
            err(
                token.col,
                format!("expected {what}, found {}", token.tok.describe()),
            )
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.peek().tok == Tok::Or {
            self.next();
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.peek().tok == Tok::And {
            self.next();
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.peek().tok == Tok::Not {
            let col = self.next().col;
            self.enter(col)?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn enter(&mut self, col: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(col, format!("nested more than {MAX_DEPTH} deep"));
        }
        Ok(())
    }

    fn comparison_op(tok: &Tok<'_>) -> Option<CmpOp> {
        Some(match tok {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Ident("contains") => CmpOp::Contains,
            Tok::Ident("starts_with") => CmpOp::StartsWith,
            _ => return None,
        })
    }

    fn is_comparison(tok: &Tok<'_>) -> bool {
        Self::comparison_op(tok).is_some() || matches!(tok, Tok::Ident("in" | "matches"))
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left = self.operand()?;
        let token = self.peek().clone();
        let expr = if let Some(op) = Self::comparison_op(&token.tok) {
            self.next();
            let right = self.operand()?;
            Expr::Cmp(op, Box::new(left), Box::new(right))
        } else if token.tok == Tok::Ident("in") {
            self.next();
            let list = self.list()?;
            Expr::In(Box::new(left), list)
        } else if token.tok == Tok::Ident("matches") {
            self.next();
            let pattern = self.next();
            let Tok::Str(text) = pattern.tok else {
                return err(
                    pattern.col,
                    format!(
                        "'matches' takes a string literal (a regular expression), found {}",
                        pattern.tok.describe()
                    ),
                );
            };
            let re = Regex::new(&text).map_err(|e| ParseError {
                column: pattern.col,
                message: format!("invalid regular expression: {e}"),
            })?;
            Expr::Matches(Box::new(left), re)
        } else {
            return Ok(left);
        };
        let after = self.peek();
        if Self::is_comparison(&after.tok) {
            return err(
                after.col,
                format!(
                    "comparisons do not chain: use parentheses or '&&' before {}",
                    after.tok.describe()
                ),
            );
        }
        Ok(expr)
    }

    fn list(&mut self) -> Result<Vec<Lit>, ParseError> {
        let open = self.next();
        if open.tok != Tok::LBracket {
            return err(
                open.col,
                format!(
                    "'in' takes a list of literals like [\"a\", \"b\"], found {}",
                    open.tok.describe()
                ),
            );
        }
        let mut list = Vec::new();
        loop {
            if self.peek().tok == Tok::RBracket {
                self.next();
                return Ok(list);
            }
            let token = self.peek().clone();
            match self.literal()? {
                Some(lit) => list.push(lit),
                None => {
                    return err(
                        token.col,
                        format!("a list holds literals only, found {}", token.tok.describe()),
                    )
                }
            }
            let sep = self.next();
            match sep.tok {
                Tok::Comma => {}
                Tok::RBracket => return Ok(list),
                other => {
                    return err(
                        sep.col,
                        format!("expected ',' or ']', found {}", other.describe()),
                    )
                }
            }
        }
    }

    /// A literal at the cursor (consumed), or `None` (nothing consumed).
    fn literal(&mut self) -> Result<Option<Lit>, ParseError> {
        let token = self.peek().clone();
        let lit = match token.tok {
            Tok::Str(s) => Lit::Str(s),
            Tok::Int(i) => Lit::Int(i),
            Tok::Float(x) => Lit::Float(x),
            Tok::Ident("true") => Lit::Bool(true),
            Tok::Ident("false") => Lit::Bool(false),
            Tok::Ident("null") => Lit::Null,
            Tok::Minus => {
                self.next();
                let number = self.next();
                return match number.tok {
                    Tok::Int(i) => Ok(Some(Lit::Int(-i))),
                    Tok::Float(x) => Ok(Some(Lit::Float(-x))),
                    other => err(
                        number.col,
                        format!("expected a number after '-', found {}", other.describe()),
                    ),
                };
            }
            _ => return Ok(None),
        };
        self.next();
        Ok(Some(lit))
    }

    fn operand(&mut self) -> Result<Expr, ParseError> {
        if let Some(lit) = self.literal()? {
            return Ok(Expr::Lit(lit));
        }
        let token = self.next();
        match token.tok {
            Tok::LParen => {
                self.enter(token.col)?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Ident(word) => self.name(word, token.col).map(Expr::Name),
            Tok::LBracket => err(token.col, "a list is only allowed after 'in'"),
            other => err(
                token.col,
                format!("expected a value, found {}", other.describe()),
            ),
        }
    }

    fn name(&mut self, word: &str, col: usize) -> Result<Name, ParseError> {
        Ok(match word {
            "key" => Name::Key,
            "dialect" => Name::Dialect,
            "model" => Name::Model,
            "stream" => Name::Stream,
            "estimated_tokens" => Name::EstimatedTokens,
            "header" | "metadata" | "param" => {
                let (field, field_col) = self.subscript(word)?;
                match word {
                    "header" => match HeaderName::from_bytes(field.as_bytes()) {
                        Ok(h) => Name::Header(h),
                        Err(_) => return err(field_col, format!("invalid header name {field:?}")),
                    },
                    "metadata" => Name::Metadata(field),
                    _ => match PARAMS.iter().find(|(name, _)| *name == field) {
                        Some((_, p)) => Name::Param(*p),
                        None => {
                            let known: Vec<&str> = PARAMS.iter().map(|(n, _)| *n).collect();
                            return err(
                                field_col,
                                format!(
                                    "unknown param '{field}' (params: {})",
                                    known.join(", ")
                                ),
                            );
                        }
                    },
                }
            }
            "in" | "contains" | "matches" | "starts_with" => {
                return err(col, format!("expected a value, found '{word}'"))
            }
            other => return err(
                col,
                format!(
                    "unknown name '{other}' (names: key, dialect, model, stream, estimated_tokens, header[...], metadata[...], param[...])"
                ),
            ),
        })
    }

    /// `["field"]` or `.field` after `header`, `metadata` or `param`.
    fn subscript(&mut self, word: &str) -> Result<(String, usize), ParseError> {
        let token = self.next();
        match token.tok {
            Tok::LBracket => {
                let field = self.next();
                let Tok::Str(text) = field.tok else {
                    return err(
                        field.col,
                        format!(
                            "expected a string in {word}[...], found {}",
                            field.tok.describe()
                        ),
                    );
                };
                self.expect(Tok::RBracket, "']'")?;
                Ok((text, field.col))
            }
            Tok::Dot => {
                let field = self.next();
                match field.tok {
                    Tok::Ident(name) => Ok((name.to_string(), field.col)),
                    other => err(
                        field.col,
                        format!(
                            "expected a name after '{word}.', found {}",
                            other.describe()
                        ),
                    ),
                }
            }
            other => err(
                token.col,
                format!(
                    "'{word}' needs a field: {word}[\"name\"], found {}",
                    other.describe()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use serde_json::{json, Map, Value as Json};

    use super::{Context, Expr, ParseError};
    use crate::chat;

    fn shown(source: &str) -> String {
        Expr::parse(source)
            .unwrap_or_else(|e| panic!("{source}: {e}"))
            .to_string()
    }

    fn error(source: &str) -> (usize, String) {
        let ParseError { column, message } = Expr::parse(source).expect_err(source);
        (column, message)
    }

    #[test]
    fn precedence_and_shapes() {
        let cases = [
            (
                r#"stream || key == "a" && model == "m""#,
                r#"(stream || ((key == "a") && (model == "m")))"#,
            ),
            (
                r#"stream && key == "a" || model == "m""#,
                r#"((stream && (key == "a")) || (model == "m"))"#,
            ),
            (
                r#"!model == "a" && stream"#,
                r#"(!(model == "a") && stream)"#,
            ),
            (
                r#"!(stream || stream) || !!stream"#,
                "(!(stream || stream) || !!stream)",
            ),
            (
                r#"stream && (key == 'a' || key == "b")"#,
                r#"(stream && ((key == "a") || (key == "b")))"#,
            ),
            (
                r#"header["X-Tier"] == 'gold'"#,
                r#"(header["x-tier"] == "gold")"#,
            ),
            ("metadata.team != null", r#"(metadata["team"] != null)"#),
            (
                "param.temperature >= 0.5 || param[\"tools\"] > 0",
                r#"((param["temperature"] >= 0.5) || (param["tools"] > 0))"#,
            ),
            (
                r#"dialect in ["openai", 'responses', -1, 2.5, null, true, ]"#,
                r#"(dialect in ["openai", "responses", -1, 2.5, null, true])"#,
            ),
            (r#"model in []"#, "(model in [])"),
            (
                r#"model matches "^gpt-4" && model starts_with 'gpt' && model contains "4o""#,
                r#"(((model matches "^gpt-4") && (model starts_with "gpt")) && (model contains "4o"))"#,
            ),
            (
                "estimated_tokens > 5e4 && estimated_tokens <= -3",
                "((estimated_tokens > 50000.0) && (estimated_tokens <= -3))",
            ),
            (r#"'it\'s' == "a\"b\\""#, r#"("it's" == "a\"b\\")"#),
            ("false", "false"),
        ];
        for (source, expected) in cases {
            assert_eq!(shown(source), expected, "{source}");
        }
    }

    #[test]
    fn errors_name_the_column() {
        let nested = format!("{}stream{}", "(".repeat(70), ")".repeat(70));
        let cases: [(&str, usize, &str); 20] = [
            (
                r#"hedaer["x"] == "a""#,
                1,
                "unknown name 'hedaer' (names: key, dialect, model, stream, estimated_tokens, header[...], metadata[...], param[...])",
            ),
            (r#"model = "a""#, 7, "'=' is not an operator; use '=='"),
            (r#"model == "a"#, 10, "unterminated string"),
            (r#"model == "a" &&"#, 16, "expected a value, found end of expression"),
            (
                r#"model == "a" == "b""#,
                14,
                "comparisons do not chain: use parentheses or '&&' before '=='",
            ),
            (
                r#"model matches model"#,
                15,
                "'matches' takes a string literal (a regular expression), found 'model'",
            ),
            (
                r#"param["foo"] > 1"#,
                7,
                "unknown param 'foo' (params: temperature, top_p, max_tokens, reasoning_effort, tools, messages)",
            ),
            (r#"(model == "a""#, 14, "expected ')', found end of expression"),
            (
                r#"model in "a""#,
                10,
                "'in' takes a list of literals like [\"a\", \"b\"], found string \"a\"",
            ),
            (r#"model in ["a" "b"]"#, 15, "expected ',' or ']', found string \"b\""),
            (r#"model in [key]"#, 11, "a list holds literals only, found 'key'"),
            (r#"header["bad name"]"#, 8, "invalid header name \"bad name\""),
            ("header == 1", 8, "'header' needs a field: header[\"name\"], found '=='"),
            ("12abc", 3, "a number must not run into a name"),
            (r#"model == "a" )"#, 14, "unexpected ')'"),
            (
                "model == 99999999999999999999",
                10,
                "integer 99999999999999999999 is out of range",
            ),
            // Columns count characters, not bytes.
            (r#""é" == mdl"#, 8, "unknown name 'mdl' (names: key, dialect, model, stream, estimated_tokens, header[...], metadata[...], param[...])"),
            ("stream & stream", 8, "'&' is not an operator; use '&&'"),
            (r#""a\q""#, 3, "unknown escape '\\q'"),
            ("", 1, "expected a value, found end of expression"),
        ];
        for (source, column, message) in cases {
            assert_eq!(error(source), (column, message.to_string()), "{source}");
        }
        let (column, message) = error(r#"model matches "(""#);
        assert_eq!(column, 15);
        assert!(
            message.starts_with("invalid regular expression: "),
            "{message}"
        );
        assert_eq!(error(&nested), (65, "nested more than 64 deep".to_string()));
        assert_eq!(
            Expr::parse("model ==").expect_err("e").to_string(),
            "expected a value, found end of expression at column 9"
        );
    }

    struct Fixture {
        headers: HeaderMap,
        metadata: Map<String, Json>,
        params: String,
    }

    impl Fixture {
        fn new() -> Self {
            let mut headers = HeaderMap::new();
            headers.insert("x-tier", HeaderValue::from_static("gold"));
            headers.append("x-multi", HeaderValue::from_static("first"));
            headers.append("x-multi", HeaderValue::from_static("second"));
            let Json::Object(metadata) = json!({"team": "ml", "n": 3, "f": 0.5, "flag": true,
                                                "nothing": null, "obj": {"a": 1}, "list": [1]})
            else {
                unreachable!()
            };
            let params = json!({
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                             {"role": "user", "content": "v"}],
                "temperature": 0.7, "max_completion_tokens": 100, "max_tokens": 5,
                "reasoning_effort": "low",
                "tools": [{"type": "function", "function": {"name": "a"}},
                          {"type": "function", "function": {"name": "b"}}]
            })
            .to_string();
            Fixture {
                headers,
                metadata,
                params,
            }
        }
    }

    fn check(cases: &[(&str, bool)], ctx: &Context<'_>) {
        for (source, expected) in cases {
            let expr = Expr::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(expr.eval(ctx), *expected, "{source}");
        }
    }

    #[test]
    fn every_name_and_operator() {
        let fixture = Fixture::new();
        let params: chat::Request = serde_json::from_str(&fixture.params).expect("params");
        let ctx = Context {
            key: Some("team-a"),
            dialect: "anthropic",
            model: "gpt-4o-mini",
            stream: true,
            estimated_tokens: 60_000,
            headers: &fixture.headers,
            metadata: &fixture.metadata,
            params: Some(&params),
        };
        check(
            &[
                // Names.
                (r#"key == "team-a""#, true),
                (r#"dialect == "anthropic""#, true),
                (r#"model == "gpt-4o-mini""#, true),
                ("stream", true),
                ("stream == true", true),
                ("estimated_tokens == 60000", true),
                (r#"header["X-TIER"] == "gold""#, true),
                (r#"header["x-multi"] == "first""#, true),
                (r#"header["x-missing"] == null"#, true),
                (r#"metadata["team"] == "ml""#, true),
                ("metadata.n == 3", true),
                ("metadata.f == 0.5", true),
                ("metadata.flag", true),
                ("metadata.nothing == null", true),
                ("metadata.absent == null", true),
                ("metadata.obj == metadata.obj", false),
                ("metadata.list != null", true),
                ("param.temperature == 0.7", true),
                ("param.top_p == null", true),
                ("param.max_tokens == 100", true),
                (r#"param.reasoning_effort == "low""#, true),
                ("param.tools == 2", true),
                ("param.messages == 3", true),
                // Equality across types.
                ("metadata.n == 3.0", true),
                (r#"metadata.n == "3""#, false),
                (r#"metadata.n != "3""#, true),
                ("null == null", true),
                ("key != null", true),
                ("true != false", true),
                // Ordering.
                ("estimated_tokens > 50000", true),
                ("estimated_tokens > 60000", false),
                ("estimated_tokens >= 60000", true),
                ("estimated_tokens < 60000.5", true),
                ("estimated_tokens <= 59999", false),
                ("param.temperature > 0.5", true),
                ("param.temperature < 1", true),
                (r#"model < "gpt-5""#, true),
                (r#"model >= "gpt-4o-mini""#, true),
                ("-2 < -1", true),
                ("1e3 == 1000", true),
                // in, contains, starts_with, matches.
                (r#"dialect in ["openai", "anthropic"]"#, true),
                (r#"dialect in ["openai", "responses"]"#, false),
                ("metadata.n in [1, 2, 3]", true),
                ("metadata.nothing in [null]", true),
                ("model in []", false),
                (r#"model contains "4o""#, true),
                (r#"model contains "5""#, false),
                (r#"model starts_with "gpt-""#, true),
                (r#"model starts_with "4o""#, false),
                (r#"model matches "^gpt-4o(-mini)?$""#, true),
                (r#"model matches "^gpt-4$""#, false),
                (r#"header["x-tier"] matches "(?i)GOLD""#, true),
                // Logic.
                (r#"stream && key == "team-a""#, true),
                (r#"stream && key == "b""#, false),
                (r#"key == "b" || stream"#, true),
                (r#"key == "b" || !stream"#, false),
                ("!stream", false),
                (r#"!(key == "b")"#, true),
                (r#"!key == "b""#, true),
                ("(stream)", true),
                // Type errors are false; `!` of one is true.
                (r#"estimated_tokens > "a""#, false),
                (r#"estimated_tokens <= "a""#, false),
                ("param.top_p > 0.5", false),
                ("!(param.top_p > 0.5)", true),
                (r#"header["x-missing"] contains "a""#, false),
                (r#"header["x-missing"] starts_with "a""#, false),
                (r#"header["x-missing"] matches ".*""#, false),
                (r#"metadata.n contains "3""#, false),
                ("metadata.team", false),
                (r#"header["x-tier"] && stream"#, false),
                ("!metadata.team", true),
                ("metadata.obj < 1", false),
            ],
            &ctx,
        );
    }

    #[test]
    fn names_without_key_or_params() {
        let fixture = Fixture::new();
        let ctx = Context {
            key: None,
            dialect: "openai",
            model: "m",
            stream: false,
            estimated_tokens: u64::MAX,
            headers: &fixture.headers,
            metadata: &fixture.metadata,
            params: None,
        };
        check(
            &[
                ("key == null", true),
                (r#"key != "team-a""#, true),
                ("stream", false),
                ("estimated_tokens == 9223372036854775807", true),
                ("param.temperature == null", true),
                ("param.tools == null", true),
            ],
            &ctx,
        );
    }

    #[test]
    fn uses_params_only_when_param_is_read() {
        let reads = |s: &str| Expr::parse(s).expect("parse").uses_params();
        assert!(!reads(r#"header["x"] == "a" && !(model in ["b"])"#));
        assert!(reads(r#"stream || !(param.tools > 0)"#));
        assert!(reads(r#"param.reasoning_effort matches "high""#));
    }
}
