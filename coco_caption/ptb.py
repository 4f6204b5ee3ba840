"""A pure-Python PTB tokenizer for captions, matching coco-caption's Java one.

coco-caption runs Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines -lowerCase` over
one caption per line and then drops the tokens in `PUNCTUATIONS`. This module re-creates
that lexer for the text captions contain: words, hyphenated words, contractions and
possessives, numbers, fractions, quotes, brackets, dashes, ellipses, abbreviations,
currency, non-ASCII letters. It is a longest-match lexer like the JFlex original: at each
position every rule is tried, the longest match wins and ties go to the earlier rule.

Known gaps (the rare tokens where the two can differ): URLs and e-mail addresses beyond
the simple forms, SGML entities other than `&amp;`, and words glued to `@`, `=`, a
backquote or a digit-and-period (`grass@bench`, `3.bat`, `etc.b.`).

The lexer looks past the end of a caption into the next one, as CoreNLP does when it reads
the captions as one file (an abbreviation before a capitalised next line gets its own
period), so `tokenize_lines` takes the captions in the order the Java tokenizer sees them.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, Iterable

# Tokens coco-caption removes after tokenizing. The bracket names are upper case there
# while `-lowerCase` emits them in lower case, so brackets survive as `-lrb-` etc.; kept.
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# Line breaks inside a caption would split it in two in the Java tokenizer; both backends
# turn them into spaces first.
NEWLINE_CHARS = "\r\n\u2028\u2029\u000b\u000c\u0085"
_NEWLINES = re.compile(f"[{NEWLINE_CHARS}]")


def _letter_class() -> str:
    """Java's Character.isLetter (Unicode L* categories) in the BMP, as a regex class body."""
    ranges, start, prev = [], None, None
    for code in range(0x80, 0x10000):
        if unicodedata.category(chr(code)).startswith("L"):
            if start is None or code != prev + 1:
                if start is not None:
                    ranges.append((start, prev))
                start = code
            prev = code
    ranges.append((start, prev))
    body = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
    return "A-Za-z" + body


# The JFlex lexer is %caseless for literal words but not for character classes, hence
# (?i:...) around every word below and classes such as [A-Z] taken as written.
_L = rf"[{_letter_class()}\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f]"
_LD = rf"(?:{_L}|\d)"
_WORD = f"{_L}+"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSETC = rf"(?:{_APOS}|[\u0091\u2018\u201b])"
_SPACE = r"[ \t\u00a0\u2000-\u200a\u3000]"
_SPACENL = rf"(?:{_SPACE}|\n)"
_SGML = r"<\/?[A-Za-z!][^>]*>"
_SENTEND = rf"{_SPACENL}(?:{_SPACENL}|[A-Z]|{_SGML})"
_REDAUX = rf"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
_HYPHEN = r"[-_\u058a\u2010\u2011]"
_ACRO = (r"(?:(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)|(?i:u\.s\.-(?:u\.k|u\.s\.s\.r))"
         r"|[A-Za-z](?:\.[A-Za-z])+)")
_INSENTP = r"[,;:]"
_NUM = r"(?:\d*(?:[.:,\u00ad\u066b\u066c]\d+)+|\d+)"
_THINGPART = rf"(?:[dDoOlL]{_APOSETC}{_LD})?{_LD}+"
_THING = rf"{_THINGPART}(?:{_HYPHEN}{_THINGPART})*"
_THINGA = r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+"
_HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|{_ACRO}\.))+"
_ABBREV1 = (r"(?:(?i:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thu|thurs|fri"
            r"|ala|ariz|calif|colo|conn|dak|del|fla|ga|ind|kans?|ky|la|md|mich|minn|mo|mont"
            r"|neb|nev|okla|pa|penn|tenn|tex|va|vt|wisc?|wyo|inc|cos?|corp|pp?tys?|ltd|plc"
            r"|bancorp|dept|bhd|assn|univ|intl|sys|prop|ph|tel|est|ext|sq|ft|jr|sr|bros"
            r"|(?:ed|ph)\.d|blvd|rd|esq|etc|al|seq)|A(?i:rk)|I(?i:ll)|M(?i:ass|iss)"
            r"|O(?i:re)|W(?i:ash))\.")
_ABBREV4 = (rf"(?:(?i:mrs?|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev"
            rf"|maj|sgt|cpl|pvt|mt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?"
            rf"|det|vs|alex|wm|jos|cie|a\.k\.a|cf|treas|invt|elec|natl|m[ft]g)|M(?i:iss)|{_ACRO}"
            rf"|[A-Za-z])")
_ABNUM = r"(?i:nos?|figs?)\."
# Capitalised words after which CoreNLP takes an acronym's period as the sentence end.
_SENTWORDS = (r"(?:A(?i:bout|ccording|dditionally|fter|n|s|t)?|B(?i:ut)|E(?i:arlier)"
              r"|H(?i:e|er|ere|owever)|I(?i:f|n|t)|L(?i:ast)|M(?i:any|ore|r\.|s\.)|N(?i:ow)"
              r"|O(?i:nce|ne|ther|ur)|S(?i:he|ince|o|ome|uch)"
              r"|T(?i:hat|he|heir|hen|here|hese|hey|his)|W(?i:e|hen|hile|hat)|Y(?i:et|ou))")
_MISC = ("[¦\u00a7¨\u00a9\u00ac\u00ae¯\u00b0-\u00ba\u00d7\u00f7\u0387\u05be\u05c0\u05c3"
         "\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d"
         "\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u2020-\u2023\u2032-\u2038\u2044"
         "\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u22ff\u2300-\u23ff"
         "\u2600-\u26ff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]")

_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3"}
_CURRENCY = [("\u00a2", "cents"), ("\u00a3", "#"), ("\u0080", "$"), ("\u00a4", "$"),
             ("\u20a0", "$"), ("\u20ac", "$")]
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-",
             "}": "-RCB-"}


def _quotes(tok: str, left: bool = False) -> str:
    """CoreNLP's LaTeX-style quotes: ` `` for opening, ' '' for closing."""
    tok = re.sub(r"&apos;|'", "`" if left else "'", tok)
    tok = re.sub(r'"|&quot;', "``" if left else "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _currency(tok: str) -> str:
    for sym, name in _CURRENCY:
        tok = tok.replace(sym, name)
    return tok


def _keep(tok: str) -> list[str]:
    return [tok]


def _soft(tok: str) -> list[str]:
    return [tok.replace("\u00ad", "")]


# (pattern, action, rest). The pattern's group "tok" is the token; text after it in the
# match is trailing context (JFlex's r1/r2), counted for the longest match but not
# consumed. `rest` says how many characters at the end of "tok" are given back.
_Rule = tuple[str, Callable[[str], list[str]], int]
_RULES: list[_Rule] = [
    (r"(?P<tok>(?i:can))(?i:not)", _keep, 0),
    (rf"(?P<tok>{_SGML})", lambda t: [t.replace(" ", "\u00a0")], 0),
    (r"(?P<tok>&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015])", lambda t: ["--"], 0),
    (r"(?P<tok>(?i:&amp;))", lambda t: ["&"], 0),
    (r"(?P<tok>&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);)", _keep, 0),
    (rf"(?P<tok>{_WORD}){_REDAUX}", _soft, 0),
    (rf"(?P<tok>[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*)(?i:n){_APOSETC}(?i:t)", _soft, 0),
    (r"(?P<tok>(?i:gon|wan)(?=(?i:na))|(?i:got)(?=(?i:ta))|(?i:lem|gim)(?=(?i:me)))..", _keep, 0),
    (rf"(?P<tok>{_WORD})", _soft, 0),
    (rf"(?P<tok>{_APOS}(?i:n){_APOS}?|[lLdDjJ]{_APOS}|(?i:dunkin|somethin|ol){_APOS}"
     rf"|{_APOS}(?i:em)|[A-HJ-XZn]{_APOSETC}{_L}{{2}}{_L}*|{_APOS}[2-9]0(?i:s)"
     rf"|{_APOS}(?i:till?)|{_L}+[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*|{_APOS}(?i:cause)"
     rf"|(?i:cont'd)\.?|(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l))", _keep, 0),
    (rf"(?P<tok>{_APOS}(?i:t))(?i:is)", _keep, 0),
    (rf"(?P<tok>(?i:y){_APOS}){_L}", _keep, 0),
    (r"(?P<tok>(?i:https?)://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])", _keep, 0),
    (r"(?P<tok>(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}"
     r"|(?:[^ \t\n\f\r\"`'<>|.!?(){},\-_$]+\.)+(?:com|net|org|edu))"
     r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?)", _keep, 0),
    (r"(?P<tok>[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0]*@(?:[^ \t\n\f\r\"<>|().\u00a0]+\.)+"
     r"[a-zA-Z]{2,4})", _keep, 0),
    (rf"(?P<tok>{_REDAUX})[^A-Za-z]", lambda t: [_quotes(t)], 0),
    (rf"(?P<tok>(?i:n){_APOSETC}(?i:t))", lambda t: [_quotes(t)], 0),
    (r"(?P<tok>\d{1,2}[-/]\d{1,2}[-/]\d{2,4})", _keep, 0),
    (rf"(?P<tok>[-+]?{_NUM})", _soft, 0),
    (r"(?P<tok>[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+"
     r"|[\u2080-\u2089]+))", _keep, 0),
    (r"(?P<tok>(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?/|\u2044)\d{1,4})",
     lambda t: [t.replace(" ", "\u00a0")], 0),
    (r"(?P<tok>[\u00bc\u00bd\u00be\u2153-\u215e])", lambda t: [_FRACTIONS.get(t, t)], 0),
    (rf"(?P<tok>(?i:-(?:rrb|lrb|rcb|lcb|rsb|lsb)-|c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500"
     rf"|s(?:&|&amp;)ls)|(?i:cap){_APOS}(?i:n)|(?i:c){_APOS}(?i:est))",
     lambda t: [t.replace("&amp;", "&")], 0),
    (r"(?P<tok>[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2})",
     _keep, 0),
    (r"(?P<tok>[A-Z]*\$|#)", _keep, 0),
    (r"(?P<tok>[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1"
     r"\uffe5\uffe6])", lambda t: [_currency(t)], 0),
    # An acronym or abbreviation that ends a sentence also yields the sentence's period.
    (rf"(?P<tok>{_ACRO}\.){_SPACENL}+{_SENTWORDS}(?:{_SPACENL}|$)", _keep, 1),
    (rf"(?P<tok>[A-Za-z]\.){_SPACENL}+{_SENTWORDS}(?:{_SPACENL}|$)", lambda t: [t[:-1]], 1),
    (rf"(?P<tok>{_ABNUM}){_SPACENL}?\d", _keep, 0),
    (rf"(?P<tok>{_ABBREV1}){_SENTEND}", _keep, 1),
    (rf"(?P<tok>{_ABBREV1})", _keep, 0),
    (rf"(?P<tok>{_ABBREV4}\.)", _keep, 0),
    (rf"(?P<tok>{_ABBREV4}){_SPACE}", _keep, 0),
    (rf"(?P<tok>{_ACRO}){_SPACENL}", _keep, 0),
    (rf"(?P<tok>{_APOS}[0-9][0-9]){_SPACENL}", _keep, 0),
    (rf"(?P<tok>{_WORD}\.){_INSENTP}", _soft, 0),
    (r"(?P<tok>(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[\- \u00a0.])[0-9]{3}[\- \u00a0.][0-9]{4})",
     lambda t: [t.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-")], 0),
    (r'(?P<tok>"|&quot;)[A-Za-z0-9$]', lambda t: _quotes(t, left=True).split(), 0),
    (r'(?P<tok>"|&quot;)', lambda t: [_quotes(t)], 0),
    (r"(?P<tok>[:;][-]?[()\[\]])",
     lambda t: ["".join(_BRACKETS.get(c, c) for c in t)], 0),
    (rf"(?P<tok>[#@](?:{_L}|_)+)", _keep, 0),
    (r"(?P<tok>[+%&\u2030\u2031~^|\\<>])", _keep, 0),
    (r"(?P<tok>[()\[\]{}])", lambda t: [_BRACKETS[t]], 0),
    (r"(?P<tok>-+)", lambda t: ["--"] if 3 <= len(t) <= 4 else [t], 0),
    (r"(?P<tok>\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u0085\u2026])", lambda t: ["..."], 0),
    (r"(?P<tok>@+|#+|_+|\*+|(?:\\\*){1,3})", _keep, 0),
    (rf"(?P<tok>{_INSENTP}|[?!]+|[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa]"
     rf"|=|/)", _keep, 0),
    (rf"(?P<tok>{_HTHING}\.){_INSENTP}", _soft, 0),
    (rf"(?P<tok>{_HTHING})", _soft, 0),
    (rf"(?P<tok>{_THING}\.){_INSENTP}", _keep, 0),
    (rf"(?P<tok>{_THING})", _keep, 0),
    # CoreNLP 3.4.1 keeps words joined by . ! ? as one token ("man.on", "wow!great").
    (rf"(?P<tok>{_L}{_LD}*(?:[.!?]{_L}{_LD}*)+)", _keep, 0),
    (rf"(?P<tok>{_THINGA}\.){_INSENTP}", lambda t: [t.replace("&amp;", "&")], 0),
    (rf"(?P<tok>{_THINGA})", lambda t: [t.replace("&amp;", "&")], 0),
    (r"(?P<tok>')[A-Za-z][^ \t\n\r\u00a0]", lambda t: [_quotes(t, left=True)], 0),
    (rf"(?P<tok>{_REDAUX})", lambda t: [_quotes(t)], 0),
    (r"(?P<tok>''|'|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094"
     r"\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2})", lambda t: [_quotes(t)], 0),
    (r"(?P<tok>&apos;)", lambda t: [_quotes(t)], 0),
    (rf"(?P<tok>{_MISC})", _keep, 0),
]
_COMPILED = [(re.compile(p), action, rest) for p, action, rest in _RULES]
# An ASCII word followed by a space or the end: no rule but WORD can match longer there,
# except for the words that split (cannot, gonna, ...). Most tokens take this short cut.
_PLAIN = re.compile(r"[A-Za-z]+(?=[ \n]|$)")
_SPECIAL_WORDS = frozenset(["cannot", "gonna", "gotta", "wanna", "lemme", "gimme"])
_SKIP = re.compile(rf"(?:{_SPACENL}|[\u0000\u200b\u200e\u200f\ufeff]|&nbsp;)+")


def _lex(text: str, end: int) -> list[str]:
    """Tokens of text[:end]; text beyond `end` is only looked at as trailing context."""
    tokens: list[str] = []
    pos = 0
    while pos < end:
        skip = _SKIP.match(text, pos)
        if skip:
            pos = skip.end()
            continue
        plain = _PLAIN.match(text, pos)
        if plain and plain.group().lower() not in _SPECIAL_WORDS:
            tokens.append(plain.group())
            pos = plain.end()
            continue
        best, best_len = None, 0
        for rule in _COMPILED:
            m = rule[0].match(text, pos)
            if m and m.end() - pos > best_len:
                best, best_len = (m, rule), m.end() - pos
        if best is None:  # CoreNLP drops characters it cannot tokenize (emoji, controls)
            pos += 1
            continue
        m, (_, action, rest) = best
        tokens.extend(action(m.group("tok")))
        pos = m.end("tok") - rest
    return tokens


def clean_caption(caption: str) -> str:
    """The caption as one line, as both backends hand it to their tokenizer."""
    return _NEWLINES.sub(" ", caption)


def tokenize_lines(captions: Iterable[str]) -> list[str]:
    """Tokenize captions read in this order, one per line: lower-cased, space-joined,
    coco-caption's punctuation removed. Equals the Java tokenizer run on the same lines."""
    lines = [clean_caption(c) for c in captions]
    out = []
    for i, line in enumerate(lines):
        # CoreNLP's sentence-end rules look a few characters into the next line.
        context = line + ("\n" + lines[i + 1][:64] if i + 1 < len(lines) else "")
        tokens = [t.lower() for t in _lex(context, len(line))]
        out.append(" ".join(t for t in tokens if t not in PUNCTUATIONS))
    return out


def tokenize(caption: str) -> str:
    """Tokenize a single caption (no next line to look at)."""
    return tokenize_lines([caption])[0]
