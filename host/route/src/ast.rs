//! The syntax tree of a condition, as the parser builds it (before type checking).
//!
//! Each node keeps the byte offset of the token that errors about it should point at (the
//! operator of a binary expression, the name of a function) and its depth, which the parser
//! bounds so that compiling and evaluating never recurse without limit.

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    /// `-x`
    Neg,
    /// `NOT x`
    Not,
}

/// Binary operators, tightest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Mul,
    Div,
    Mod,
    Add,
    Sub,
    Concat,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    Coalesce,
}

impl BinaryOp {
    /// Binding strength: higher binds tighter (all are left-associative).
    pub fn precedence(self) -> u8 {
        match self {
            Self::Mul | Self::Div | Self::Mod => 7,
            Self::Add | Self::Sub | Self::Concat => 6,
            Self::Lt | Self::Le | Self::Gt | Self::Ge => 5,
            Self::Eq | Self::Ne => 4,
            Self::And => 3,
            Self::Or => 2,
            Self::Coalesce => 1,
        }
    }
}

/// A node of the syntax tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ast {
    pub kind: AstKind,
    /// Byte offset that errors about this node point at.
    pub at: usize,
    /// Height of the tree below this node (a leaf is 1).
    pub depth: usize,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AstKind {
    Bool(bool),
    /// A string literal, unescaped.
    Str(String),
    /// A number literal; `None` when upstream's number parser rejects the token (`e5`, a hex
    /// literal wider than 64 bits), which makes the literal `undefined`.
    Number(Option<f64>),
    Null,
    Undefined,
    /// A bare identifier: an application property.
    Property(String),
    /// `$name`, with the `$`.
    SysProperty(String),
    /// `{$name}`, with the `$`.
    EscapedSysProperty(String),
    /// `name(args)`. `raw_args` is the argument tokens' text joined without blanks, which is what
    /// `twin_change_includes` takes as its path.
    Call {
        name: String,
        args: Vec<Ast>,
        raw_args: String,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Ast>,
    },
    Binary {
        op: BinaryOp,
        /// The operator as written (`<>` or `!=`), for messages.
        op_text: String,
        left: Box<Ast>,
        right: Box<Ast>,
    },
}
