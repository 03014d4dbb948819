"""The detectors: labelled, weighted patterns over the folded views (lower case, look-alikes
folded, invisible characters removed; see :mod:`closedpaw.screening.normalize`).

Each rule has ``needles``; each needle's longest run of letters is a key, and a rule's
regular expression runs only when one of its keys begins some word of the view (one set
lookup: most texts wake few rules, which keeps screening fast), and only where the literal
strings it cannot match without are present in order (:mod:`closedpaw.screening.literals`:
the search is skipped, or starts where a match can first begin; the verdict is the same).
Weights
combine as independent evidence: ``score = 1 - prod(1 - w)``; a text is flagged at 0.5.
Strong rules (0.8) flag alone; medium ones (0.5) flag alone but only for unambiguous
phrasing; weak ones (0.2-0.4) flag only together with another hit.

How the rules were chosen is written down in docs/screening.md: they were written from the
project's own labelled set (tests/data/screening_cases.jsonl) before the public corpus was
looked at.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from itertools import repeat

from closedpaw.screening import literals

__all__ = ["ALL_KEYS", "LABELS", "RULES", "Rule", "hit_keys", "woken", "word_prefixes"]

LABELS = ("instruction_override", "role_play", "system_prompt", "exfiltration",
          "addressed_to_ai", "hidden_markup", "encoded_payload", "hidden_unicode")


@dataclass(frozen=True)
class Rule:
    name: str
    label: str
    weight: float
    keys: frozenset[str]
    pattern: re.Pattern[str]
    #: literal substrings one of which must be present too (checked after the keys)
    requires: tuple[str, ...] = ()
    #: a pattern that must also match in the 120 characters before the match
    context: re.Pattern[str] | None = None

    def search(self, s: str, hit: frozenset[str] | set[str] | None = None,
               at: dict[str, tuple[int, int]] | None = None) -> re.Match[str] | None:
        """The first match in ``s``. With ``hit`` (the keys present in ``s``), only the span
        from 200 characters before the first occurrence of one of this rule's keys to 300
        after the last one is searched: every match contains a key near its start. ``at``:
        ``(s.find(k), s.rfind(k))`` of each key in ``hit``, when the caller has them."""
        if self.requires and not any(r in s for r in self.requires):
            return None
        lo, hi = 0, len(s)
        if hit is not None and hi > _WINDOW_MIN:
            mine = self.keys & hit
            if mine:
                if at is None:
                    first = min(s.find(k) for k in mine)
                    last = max(s.rfind(k) for k in mine)
                elif len(mine) == 1:
                    first, last = at[next(iter(mine))]
                else:
                    first = min(at[k][0] for k in mine)
                    last = max(at[k][1] for k in mine)
                lo = max(0, first - 200)
                hi = min(hi, last + 300)
        try:
            plan: literals.Plan | None = self.__dict__["_plan"]
        except KeyError:
            plan = _plan_of(self.pattern)
            object.__setattr__(self, "_plan", plan)     # made once, on the first search
        if self.context is None:
            if plan is None or (hi - lo < _SHORT and not plan.costly):
                return self.pattern.search(s, lo, hi)
            return literals.search(plan, self.pattern, s, lo, hi)
        if plan is not None:        # the literals every match needs: skip ahead or stop
            lo = literals.start(plan, s, lo, hi)
            if lo < 0:
                return None
        context = self.context
        cplan = _plan_of(context)
        for m in self.pattern.finditer(s, lo, hi):
            a, b = max(0, m.start() - 120), m.start()
            if (context.search(s, a, b) if cplan is None
                    else literals.search(cplan, context, s, a, b)):
                return m
        return None


def _plan_of(pattern: re.Pattern[str]) -> literals.Plan | None:
    """The literal pre-check of one of the rules' patterns, made on its first search."""
    try:
        return _PLANS[id(pattern)][1]
    except KeyError:
        plan = literals.plan(pattern)
        _PLANS[id(pattern)] = (pattern, plan)
        return plan


_LETTERS = re.compile(r"[^\W\d_]+")
_WINDOW_MIN = 800
#: below this many characters a search costs less than its literal pre-check (unless the
#: pattern is of the shape that backtracks most)
_SHORT = 160
#: id(pattern) -> (pattern, its literal plan), made on the pattern's first search
_PLANS: dict[int, tuple[re.Pattern[str], literals.Plan | None]] = {}


def prepare() -> None:
    """Make every rule's literal pre-check now (~80 ms once per process) instead of on each
    rule's first search, which put that cost on the first messages a server screens."""
    for rule in RULES:
        if "_plan" not in rule.__dict__:
            object.__setattr__(rule, "_plan", _plan_of(rule.pattern))
        if rule.context is not None:
            _plan_of(rule.context)


def _key(needle: str) -> str:
    runs: list[str] = _LETTERS.findall(needle.lower())
    if not runs:
        raise ValueError(f"needle {needle!r} has no letters")
    return max(runs, key=len)[:_MAX_PREFIX]


def _r(name: str, label: str, weight: float, needles: str, pattern: str,
       requires: tuple[str, ...] = (), context: re.Pattern[str] | None = None) -> Rule:
    return Rule(name, label, weight, frozenset(_key(n) for n in needles.split("|")),
                re.compile(pattern, re.S), requires, context)


_MAX_PREFIX = 6


def word_prefixes(view: str) -> set[str]:
    """Every prefix (2 to 6 characters) of every word of ``view`` (words split at spaces and
    at ``-'/_.:()=?&#``; surrounding punctuation stripped)."""
    for ch in "-'/_.:()=?&#":
        if ch in view:
            view = view.replace(ch, " ")
    out: set[str] = set()
    for w in set(view.split()):
        w = w.strip(_PUNCT)
        out.update((w[:2], w[:3], w[:4], w[:5], w[:6]))
    return out


_PUNCT = ",;!?[]{}\"<>*#`|=+&%$@~^\u00ab\u00bb\u201c\u201d\u2018\u2019\u00bf\u00a1"


class _PrefixKeys(dict[str, frozenset[str]]):
    """A word's first six characters -> the rule keys among its 2- to 6-character
    prefixes (filled as words are met; emptied when large)."""

    def __missing__(self, first6: str) -> frozenset[str]:
        if len(self) > 50_000:
            self.clear()
        keys = ALL_KEYS.intersection((first6[:2], first6[:3], first6[:4], first6[:5], first6))
        self[first6] = found = frozenset(keys)
        return found


_PREFIX_KEYS = _PrefixKeys()
_STRIP = operator.methodcaller("strip", _PUNCT)
_FIRST6 = operator.itemgetter(slice(None, _MAX_PREFIX))


def hit_keys(view: str) -> frozenset[str]:
    """``word_prefixes(view) & ALL_KEYS``: the rule keys that begin some word of ``view``
    (computed per distinct word start, with the loops in C)."""
    for ch in "-'/_.:()=?&#":
        if ch in view:
            view = view.replace(ch, " ")
    starts = set(map(_FIRST6, map(_STRIP, set(view.split()))))
    return frozenset().union(*map(_PREFIX_KEYS.__getitem__, starts))


def woken(hit: frozenset[str] | set[str]) -> list[Rule]:
    """The rules (in ``RULES`` order) with a key in ``hit``."""
    if not hit:
        return []
    found = set().union(*map(_RULES_BY_KEY.get, hit, repeat(())))
    return list(map(RULES.__getitem__, sorted(found)))


_G = r"[^.!?\n]{0,40}?"        # a short gap inside one sentence
_GL = r"[^\n]{0,100}?"         # a longer gap inside one line

# nouns for "what the model was told"
_EN_RULES = (r"(?:instructions?|directions?|directives?|rules?|guidelines?|guidance|prompts?"
             r"|polic(?:y|ies)|restrictions?|constraints?|limitations?|limits|safeguards?"
             r"|guardrails?|programming|commands?|orders|context|system message|training|task"
            r"|mission|assignment)")
_EN_QUAL = (r"(?:previous|prior|above|earlier|preceding|original|initial|old system|all|any"
            r"|content|usual|normal|standard|built-in|internal"
            r"|every|your|system|developer'?s?|safety|existing|current|given|foregoing"
            r"|those|these)")
_SECRETS = (r"(?:api[ _-]?keys?|secrets?|passwords?|passphrases?|credentials?|access tokens?"
            r"|tokens?|private keys?|ssh keys?|id_rsa|\.env\b|/etc/shadow|/etc/passwd"
            r"|aws/credentials|\.aws|session (?:tokens?|cookies?)|cookies|keys you can access"
            r"|[a-z_]*_(?:api_)?(?:key|token|secret)\b|confidential \w+|database credentials"
            r"|customer (?:list|data|records|emails|database|details)|user data|personal data"
            r"|internal (?:data|configuration|config|documents)|client data|records"
            r"|(?:the )?(?:whole |entire |full )?conversation(?: so far)?|chat log|transcript"
            r"|messages so far|card numbers?|credit cards?|\.netrc|\.pgpass|\.git-credentials"
            r"|\.npmrc|\.pypirc|kubeconfig|contacts|address book"
            r"|chat history|conversation history|inbox|emails|attachments|saved passwords)")
_DEST = (r"(?:https?://|www\.|\b[\w.+-]+@[\w-]+\.[\w.]+|\bto me\b|my server|this address"
         r"|external|attacker|webhook|pastebin|the url|this url|the link|\?\w+=|/tmp/"
         r"|public (?:repo|repository|gist|bucket|folder|channel)|pick (?:it|them) up)")

RULES: tuple[Rule, ...] = (
    # ---------------------------------------------------------------- instruction override
    _r("en.ignore_previous", "instruction_override", 0.85,
       "ignor|disregard|forget|skip|bypass|overrid|discard|abandon|neglect|overlook|drop|"
       "set aside|throw out|follow|bound by",
       r"\b(?:ignore|disregard|forget|skip|bypass|override|discard|abandon|neglect|overlook"
       r"|drop|set aside|throw out|do not follow|don't follow|stop following"
       r"|(?:are|is|be) no longer bound by|(?:are|is) not bound by)\b"
       rf"{_G}\b{_EN_QUAL}\b{_G}\b{_EN_RULES}\b"),
    _r("en.ignore_above", "instruction_override", 0.8, "ignor|disregard|forget",
       r"\b(?:ignore|disregard|forget)\s+(?:all\s+|everything\s+|anything\s+)?(?:of\s+)?"
       r"(?:the\s+|what(?:'s| is| was)\s+)?(?:above|previous(?:ly)?|prior|preceding|earlier"
       r"|before)(?=\s*(?:[.,;:!)\-]|$|and\b|then\b|now\b|instead\b|instructions?\b"
       r"|text\b|content\b|context\b|lines?\b))"),
    _r("en.everything_above", "instruction_override", 0.8, "ignor|disregard|forget",
       r"\b(?:ignore|disregard|forget)\s+(?:everything|all|anything)\s+(?:above|before|"
       r"you (?:were|have been) told|you know|said)"),
    _r("en.new_instructions", "instruction_override", 0.5,
       "new|updated|instruction|rule|task",
       r"\b(?:your\s+)?(?:new|updated|real|actual|true)\s+(?:system\s+)?(?:instructions?|rules?"
       r"|task|directive|policy|objective|orders?)\s*(?:is|are|:|follows?)"),
    _r("en.from_now_on", "instruction_override", 0.4, "now|henceforth|longer",
       r"\b(?:from now on|henceforth|starting now|as of now|you are no longer|no longer bound"
       r"|no longer (?:apply|applies|restricted))\b"),
    _r("en.no_limits", "instruction_override", 0.5,
       "restriction|limit|filter|guideline|rules|censor|comply|obey|refuse",
       r"\b(?:no|without|free of|free from|zero|any)\s+(?:any\s+)?(?:restrictions|limits"
       r"|limitations|filters?|guidelines|rules|censorship|content polic(?:y|ies)|safety)\b"
       r"|\b(?:always|must|will) (?:comply|obey)\b|\bnever refuses?\b|\bobey (?:only )?me\b"
       r"|\bonly (?:obey|listen to) me\b|\bfollow only my\b"),
    _r("en.rules_void", "instruction_override", 0.8, "appl|void|suspend|cancel|outdated|lift",
       rf"\b{_EN_RULES}\b{_G}\b(?:no longer appl(?:y|ies)|do(?:es)? not apply|don't apply"
       r"|doesn't apply|(?:are|is) "
       r"(?:now )?(?:void|suspended|cancell?ed|lifted|outdated|disabled|revoked)|were a test)"),
    _r("en.disable_safety", "instruction_override", 0.7,
       "disable|turn off|deactivat|remove|bypass|skip|switch off|lift",
       r"\b(?:disable|turn off|deactivate|remove|bypass|skip|switch off|lift)\s+(?:your\s+|the\s+"
       r"|all\s+|any\s+)?(?:safety|content|guard ?rails?|filters?|restrictions|safeguards"
       r"|ethical|moral|approvals?|confirmation(?: prompts?| step)?|the approval gate"
       r"|the rules|limits)\b"),
    _r("en.approve_all", "instruction_override", 0.7, "approv|without ask|without confirm",
       r"\b(?:approve|accept|allow|authori[sz]e)\s+(?:every|all|any)\s+(?:pending\s+)?"
       r"(?:actions?|requests?|commands?|meeting requests?|tool calls?)\b"
       r"|\bpre-?approved\b|\ball actions are (?:pre-?)?approved\b"
       r"|\bwithout (?:asking|approval|confirmation|permission|telling)\b"),
    _r("en.override_word", "instruction_override", 0.4, "override|admin mode|maintenance mode",
       r"(?:^|\n)\s*override\s*:|\b(?:admin(?:istrator)? override|override (?:mode|code"
       r"|instructions?)|begin admin"
       r"|maintenance mode|priority instruction|instruction override|prompt override)\b"),
    _r("en.dangerous_exec", "instruction_override", 0.6, "rm -rf|curl|wget|mkfs|chmod|dd if",
       r"\b(?:run|execute|exec|type|call)\b[^\n]{0,40}(?:rm -rf|curl [^\n|]*\|\s*(?:ba)?sh"
       r"|wget |mkfs|dd if=|chmod 777|:\(\)\s*\{)|(?:^|[\s:])rm -rf [/~]"),
    _r("en.trigger_word", "instruction_override", 0.5, "whenever you see|when you see",
       r"\bwhenever you (?:see|read|encounter)\b[^\n]{0,80}\b(?:execute|run|do|ignore|obey)"),
    _r("en.instead", "instruction_override", 0.3, "instead", r"\binstead\b"),
    # ---------------------------------------------------------------- role play / persona
    _r("en.you_are_now", "role_play", 0.4, "now|role|roleplay",
       r"\b(?:you are now|you're now|you will now (?:act|be|roleplay)|from now on you(?:'ll| "
       r"will)? (?:be|act|roleplay|play)|roleplay as|role-play as|role play as)\b"),
    _r("en.unrestricted_persona", "role_play", 0.8,
       "unrestrict|unfilter|uncensor|jailbr|evil|rogue|amoral|no restrictions|dan|"
       "developer mode|god mode|do anything|pretend|act|behave|roleplay|mode",
       r"\b(?:unrestricted|unfiltered|uncensored|jailbroken|amoral|rogue|evil ?bot|evil ai"
       r"|broken free)\b[^\n]{0,60}\b(?:model|ai|assistant|bot|version|mode|persona|character"
       r"|can do anything)\b"
       r"|\b(?:pretend|act|behave|roleplay|role-play)\b[^\n]{0,40}\b(?:unrestricted|unfiltered"
       r"|uncensored|jailbroken|amoral|evil|no (?:content )?(?:policy|rules|restrictions))\b"
       r"|\bdan\b[^\n]{0,60}\b(?:anything|restrictions|free|rules)\b|\bdo anything now\b"
       r"|\b(?:developer|god|jailbreak|sudo|unrestricted|dan|opposite|chaos|unlocked|evil)"
       r" mode\b(?! (?:in|for|of) (?:the|your|my) (?:app|settings|game|editor))"),
    _r("en.grandma", "role_play", 0.4, "grandm|deceased|late ",
       r"\b(?:grandm(?:a|other)|deceased|late (?:mother|father|grandfather))\b[^\n]{0,80}"
       r"\b(?:password|key|token|secret|credentials|serial|napalm|recipe for)"),
    _r("en.authority_claim", "role_play", 0.5, "developer|openai|anthropic|admin|staff|"
       "authori|penetration",
       r"\b(?:as (?:the|your) (?:assistant'?s? )?(?:developer|creator|admin(?:istrator)?|owner)"
       r"|i am (?:the|your) (?:developer|creator|admin(?:istrator)?)|(?:openai|anthropic|google)"
       r" staff|authori[sz]ed (?:penetration|pen|security) test|the developers said)\b"),
    # ---------------------------------------------------------------- system prompt
    _r("sys.delimiters", "system_prompt", 0.7, "im|inst|sys|system|user|assistant|endoftext",
       r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|assistant\|>|<\|endoftext\|>|\[inst\]"
       r"|<<sys>>|</?system>|</user>|###\s*system",
       requires=("<|", "[inst]", "<<sys", "<system", "</system", "</user", "#")),
    _r("sys.role_line", "system_prompt", 0.4, "system|admin|[system]|assistant",
       r"(?:^|\n|\s)(?:\[system\]|system|system message|admin(?:istrator)?|"
       r"new system instruction)\s*[:\]]\s*(?!\d)\w"),
    _r("sys.extract", "system_prompt", 0.8,
       "prompt|instructions|rules you|were given|told",
       r"\b(?:reveal\w*|show\w*|print\w*|repeat\w*|output\w*|display\w*|tell me|give me"
       r"|dump\w*|leak\w*|share|recite|write out|what (?:is|are|were)|list)\b[^\n]{0,50}"
       r"\b(?:(?:your|the assistant'?s?|its)"
       r" (?:(?:full|complete|entire|exact|original|hidden|secret|initial|internal|system|real)"
       r" )*(?:system prompt|prompt|instructions|rules|guidelines|configuration)"
       r"|(?:hidden|secret) (?:prompt|instructions|rules)"
       r"|the (?:full|complete|entire|exact|original|hidden|whole|verbatim) system prompt"
       r"|instructions you were given|what you were told)\b"),
    _r("sys.verbatim", "system_prompt", 0.4, "verbatim|word for word|exactly|in full",
       r"\b(?:verbatim|word for word|in full|exactly as)\b"),
    # ---------------------------------------------------------------- exfiltration
    _r("ex.send_to", "exfiltration", 0.8,
       "send|upload|post|forward|email|e-mail|transmit|exfiltrat|leak|copy|append|pipe|"
       "include|put|encode|commit|push|publish|write|save|dump",
       r"\b(?:send|upload|post|forward|email|e-mail|mail|transmit|exfiltrate|leak|copy|append"
       r"|pipe|include|put|encode|attach|commit|push|publish|write|save|dump)\b"
       rf"{_GL}{_SECRETS}{_GL}{_DEST}"),
    _r("ex.dest_first", "exfiltration", 0.5, "send|upload|post|forward|email",
       rf"\b(?:send|upload|post|forward|e-?mail)\b[^\n]{{0,30}}{_DEST}{_GL}{_SECRETS}"),
    _r("ex.reveal_secret", "exfiltration", 0.6,
       "print|reveal|show|dump|output|give|tell|paste|display|read|cat |list|respond|return|"
       "reply|answer",
       r"\b(?:print|reveal|show|dump|output|give me|tell me|paste|display|read|cat|list|return"
       r"|(?:respond|reply|answer) (?:only |also )?with)\b[^.\n]{0,40}"
       r"\b(?:the\s+|your\s+|all\s+|any\s+|my\s+)?"
       r"(?:admin(?:istrator)?\s+|root\s+|raw\s+|production\s+)?(?:api[ _-]?keys?|passwords?"
       r"|credentials|secrets|private keys?|ssh keys?|id_rsa|/etc/shadow|\.env\b"
       r"|aws/credentials|session tokens?|admin token|(?:[a-z]+_)+(?:key|token|secret)\b"
       r"|confidential \w+|values?\b[^.\n]{0,12}secret|database credentials|contents of (?:your"
       r" )?memory|raw contents|contents of ~?/?\S*(?:\.netrc|\.pgpass|credentials|\.ssh\S*|\.env)"
       r"|(?:the )?user'?s? (?:saved )?(?:addresses|card numbers|credit cards?|contacts)"
       r"|card numbers)"),
    _r("ex.read_sensitive", "exfiltration", 0.5, "ssh|shadow|.env|credentials|id_rsa",
       r"\b(?:cat|read|open|send|upload|include|post)\s+(?:the\s+)?(?:file\s+)?"
       r"(?:~/\.ssh\S*|\S*id_rsa|/etc/shadow|\S*\.env\b|\S*\.aws/credentials)"),
    _r("ex.curl_upload", "exfiltration", 0.8, "curl|wget",
       r"\b(?:curl|wget)\b[^\n]{0,40}(?:-d|--data\S*|-f|-t|--upload-file|--post-file\S*)\s+"
       r"\S*(?:\.ssh|id_rsa|\.env|shadow|\.aws|\.netrc|credentials|\.pgpass)"),
    _r("ex.secret_tool", "exfiltration", 0.6, "secret_read|network_request|file_write|tool",
       r"\b(?:call|use|invoke|run)\s+(?:the\s+)?(?:secret_read|network_request|file_write"
       r"|network tool|email tool|http tool|shell tool)\b"),
    _r("ex.md_image", "exfiltration", 0.6, "http",
       r"!\[[^\]]*\]\(https?://[^)\s]*\?[^)\s]*="),
    _r("ex.sensitive_word", "exfiltration", 0.2, "password|secret|credential|token|key",
       r"\b(?:passwords?|secrets|credentials|tokens|api keys?|private key)\b"),
    _r("ex.covert", "exfiltration", 0.3, "silently|quietly|secretly|without telling|covert",
       r"\b(?:silently|quietly|secretly|covertly|without (?:telling|notifying|alerting))\b"),
    # ---------------------------------------------------------------- addressed to the model
    _r("ai.addressed", "addressed_to_ai", 0.4, "note|message|instruction|attention",
       r"\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
       r"(?:ai|assistant|llm|language model|agent|bot|chatbot|model)s?\b"),
    _r("ai.reading_this", "addressed_to_ai", 0.4, "ai|assistant|llm|model|agent|chatbot",
       r"\b(?:ai|assistant|llm|language model|agent|model|chatbot)s?\s+(?:reading|processing"
       r"|summari[sz]ing|parsing|viewing)\s+this\b"),
    _r("ai.if_you_are", "addressed_to_ai", 0.4, "ai|llm|model|assistant|agent|bot",
       r"\bif you are an? (?:ai|llm|language model|assistant|agent|bot)\b"),
    _r("ai.when_you", "addressed_to_ai", 0.4, "summari|process|read|translat|parse",
       r"\bwhen you (?:summari[sz]e|process|read|translate|parse) this\b"),
    _r("ai.label", "addressed_to_ai", 0.4, "ai|assistant|llm|agent",
       r"\b(?:ai|assistant|ai agent|llm|to the assistant)\s*:\s*\w",
       requires=(":",)),
    _r("ai.for_model", "addressed_to_ai", 0.4, "instructions",
       r"\binstructions for the (?:language )?model\b"),
    _r("en.protocols_off", "instruction_override", 0.8,
       "safety|security|content|protocol|filter|guardrail",
       r"\b(?:safety|security|content|ethical)\s+(?:protocols?|filters?|polic(?:y|ies)"
       r"|guidelines|rules|restrictions|guardrails|checks)\s+(?:are\s+|is\s+|have been\s+"
       r"|now\s+)*(?:disabled|off|suspended|lifted|removed|deactivated|bypassed|void)\b"),
    _r("en.supersedes", "instruction_override", 0.8, "supersed|replac|overrid|takes precedence",
       r"\b(?:supersedes?|replaces?|overrides?|takes precedence over)\s+(?:all\s+|any\s+)?"
       r"(?:the\s+)?(?:prior|previous|earlier|existing|other|original)\s+(?:ones|instructions"
       r"|rules|directives|guidance|prompts?|orders)\b"),
    _r("en.exempt", "instruction_override", 0.8, "exempt",
       r"\bexempt from (?:the |all |any |your |my )?(?:usual |normal |standard |safety )?"
       r"(?:restrictions|rules|guidelines|policies|policy|safety|limits|filters)"),
    _r("en.you_have_no_rules", "instruction_override", 0.8, "have|no|rules",
       r"\byou (?:now )?have no (?:more )?(?:rules|restrictions|limits|guidelines|filters"
       r"|boundaries)\b"),
    _r("en.decode_and_follow", "encoded_payload", 0.8,
       "decod|base|hex|rot|translat|decipher|unscramble|revers",
       r"\b(?:decode|decipher|unscramble|translate)\b[^\n]{0,60}\b(?:follow|execute|do|obey"
       r"|run|carry out|act on)\b[^\n]{0,40}(?:instructions?|what it says|it says|inside"
       r"|the result|commands?|them|it)\b"
       r"|\b(?:decode|decipher|reverse|unscramble|translate)\w*\b[^\n]{0,20}\b(?:and|then)\s+"
       r"(?:obey|follow|execute|comply|do it|run it|act on it)\b"),
    _r("tool.call", "exfiltration", 0.5, "call|use|invoke|run|trigger",
       r"\b(?:call|use|invoke|run|trigger)\s+(?:the\s+)?`?[a-z]+_[a-z_]+`?\s*(?:\(\)\s*)?"
       r"(?:tool\s+|function\s+)?(?:to|on|with|for)\b"),
    _r("ex.after_secret", "exfiltration", 0.8, "send|upload|post|forward|email|transmit",
       rf"\b(?:send|upload|post|forward|e-?mail|transmit)\b[^\n]{{0,40}}{_DEST}",
       context=re.compile(_SECRETS)),
    _r("ex.external", "exfiltration", 0.6, "extern|external|outside|third",
       r"\b(?:send|envoie|envoy|sende|schick|envía|envia|manda|invia|forward|e-?mail|upload)\w*"
       r"[^\n]{0,60}\b(?:external|externe|externen?|esterno|externo|third-party|outside)\b"),
    _r("ai.response_hook", "addressed_to_ai", 0.4,
       "before|end|every|each|future|ende|fin|fine|final",
       r"\bbefore (?:you (?:reply|respond|answer)|responding|replying|answering)\b"
       r"|\b(?:at the end of|in) (?:every|each|any|all) (?:future )?(?:reply|replies|response"
       r"|responses|answer|answers|message)\b"
       r"|\bam ende jeder antwort\b|\bà la fin de (?:toute|chaque) réponse\b"
       r"|\balla fine di ogni risposta\b|\bal final de cada respuesta\b"),
    # a document telling whoever summarises it to put an identifier, link or marker into
    # the output (step 6 in docs/screening.md): the verb, an identifier-like object (a
    # snake_case name, a link, a ref like XK-19, a marker) and "in your summary/answer"
    _r("ind.output_directive", "exfiltration", 0.5,
       "include|add|append|insert|put|copy|paste|repeat|mention|quote|echo|print|output|"
       "write|füge|fuge|nimm|schreib|setz|kopier|wiederhol|erwähn|erwahn|ajout|inclu|insèr|"
       "inser|mets|copi|répèt|repet|mention|incluy|añad|anad|agreg|pon|repit|menciona|"
       "includi|aggiungi|inserisci|metti|ripeti|menziona",
       r"\b(?:include|add|append|insert|put|copy|paste|repeat|mention|quote|echo|print"
       r"|output|write|füge|fuge|nimm|schreib\w*|setze?|kopiere?|wiederhole|erwähne|erwahne"
       r"|ajoute[zr]?|inclu(?:s|ez|re)|insère[zr]?|insere[zr]?|mets|mettez|copie[zr]?"
       r"|répète[zr]?|repete[zr]?|mentionne[zr]?|incluye|incluya|añade|anade|agrega|inserta"
       r"|pon|copia|repite|menciona|includi|aggiungi|inserisci|metti|ripeti|menziona)\b"
       r"(?:[^.!?\n]|[.?](?=\S)){0,80}?(?:\b[a-z]+_[a-z_]+\b|https?://|\b[a-z]{1,4}-\d+\b|##"
       r"|\b(?:marker|canary|link|url|lien|enlace|collegamento|marqueur|markierung)\b)"
       r"(?:[^.!?\n]|[.?](?=\S)){0,80}?"
       r"\b(?:(?:in|into|to|(?:at|to) the end of)\s+(?:your|their|its|the|every|each)\s+(?:summary"
       r"|summaries|answer|answers|response|responses|reply|replies|output)"
       r"|in (?:deine|ihre|die|jede) (?:zusammenfassung|antwort|ausgabe)"
       r"|(?:à|a|dans) (?:ta|votre|ton|la|chaque) (?:réponse|reponse|résumé|resume|sortie)"
       r"|en (?:tu|su|el|la|cada) (?:resumen|respuesta|salida)"
       r"|(?:nel|nella|in) (?:tuo |tua |ogni )?(?:riassunto|risposta|output))\b"),
    # steering a summary or verdict (step 7 in docs/screening.md): addressed to whoever
    # summarises or screens, and told what to answer or to hide
    _r("ai.if_you_process", "addressed_to_ai", 0.4,
       "summari|process|reading|review|screen|evaluat|ranking|parsing|ia|ki|assistant|"
       "intelligence|modèle|modelo|modello|asistente|assistente|sprachmodell|modell",
       r"\bif you(?:'re| are)\s+(?:an?\s+)?(?:ai\s+|llm\s+|language model\s+|assistant\s+"
       r"|bot\s+|model\s+)?(?:summari[sz]ing|processing|reading|reviewing|screening"
       r"|evaluating|ranking|parsing)\b"
       r"|\bsi tu es (?:une? )?(?:ia|assistant|intelligence artificielle|modèle)\b"
       r"|\bsi eres (?:una? )?(?:ia|asistente|modelo|inteligencia artificial)\b"
       r"|\bse sei (?:un'|una? )?(?:ia|assistente|intelligenza artificiale|modello)\b"
       r"|\bwenn du (?:eine? )?(?:ki|assistent|sprachmodell|modell)\b"),
    _r("ai.to_screeners", "addressed_to_ai", 0.4,
       "note|hinweis|message|nachricht|automated|automatic|automatisch",
       r"\b(?:note|message|hinweis|nachricht|instructions?)\s+(?:to|for|an|für)\s+(?:all\s+|any"
       r"\s+|the\s+|alle\s+|die\s+)?(?:automated|automatic|automatische\w*|ai|ki)[\s-]+"
       r"(?:screen\w*|system\w*|filter\w*|review\w*|recruit\w*|hiring|bewerbungs\w*|tools?"
       r"|agents?|readers?)\b"),
    _r("steer.answer_only", "instruction_override", 0.4,
       "reply|respond|answer|output|antworte|réponds|reponds|responde|rispondi",
       r"\b(?:reply|respond|answer|output)\s+only\s+with\b|\bantworte\s+nur\s+mit\b"
       r"|\br[ée]ponds?\s+(?:uniquement|seulement)\s+(?:par|avec)\b"
       r"|\bresponde\s+(?:solo|solamente|únicamente|unicamente)\s+con\b"
       r"|\brispondi\s+solo\s+con\b"),
    _r("steer.conceal", "exfiltration", 0.4,
       "mention|erwähne|erwahne|mentionne|menciones|menzionare|tell|reveal",
       r"\b(?:do not|don't|never)\s+(?:mention|reveal|tell (?:anyone|the user) about)\s+"
       r"(?:this|these|any|the)\s+(?:note|instructions?|message|comment|gaps?|text|request)\b"
       r"|\berwähne\s+(?:keine|diese|diesen|nicht)\b|\berwahne\s+(?:keine|diese|nicht)\b"
       r"|\bne\s+mentionne\s+pas\b|\bno\s+menciones\b|\bnon\s+menzionare\b"),
    _r("steer.verdict", "instruction_override", 0.4,
       "recommend|rate|rank|state|say|claim|affirm|declare|bewerte|affirme|dichiara|"
       "summary|must",
       r"\b(?:recommend|rate|rank)\s+(?:this|the|her|him|them|it)\b[^.\n]{0,40}"
       r"\b(?:for hiring|hire|as (?:excellent|exceptional|outstanding|the best|top)|5 stars"
       r"|five stars|highest)\b"
       r"|\b(?:state|say|claim|affirm|declare|tell the user)\s+that\s+(?:every|all|each|there"
       r"|the company|this (?:site|product|candidate|company))\b"
       r"|\byour (?:summary|answer|response|reply|review)\s+must\s+(?:say|state|claim|conclude"
       r"|report)\b"
       r"|\bbewerte\s+(?:diesen|diese|dieses|ihn|sie)\b[^.\n]{0,40}\bals\b"
       r"|\baffirme\s+que\b|\bdichiara\s+che\b|\bafirma\s+que\b"),
    _r("ai.addressed_agents", "addressed_to_ai", 0.4, "ai|agent|assistant|llm|model",
       r"\b(?:ai|assistant|llm|agent|model)s? (?:integrating|using|installing|running|handling"
       r"|reviewing) this\b"),
    _r("act.destructive", "instruction_override", 0.4,
       "delete|remove|wipe|erase|empty|drop|truncate|purge|rm",
       r"\b(?:delete|remove|wipe|erase|empty|drop|truncate|purge)\b[^.\n]{0,40}"
       r"\b(?:directory|folder|files|database|db|table|repo(?:sitory)?|backups?|logs)\b"),
    _r("mem.persist", "addressed_to_ai", 0.4, "save|store|write|add|remember|persist",
       r"\b(?:save|store|write|add|remember|persist)\b[^.\n]{0,30}\b(?:to|in|into) (?:your )?"
       r"(?:memory|long-term memory|persistent memory|memories)\b"),
    _r("sys.note_ml", "system_prompt", 0.4, "systemhinweis|systemnachricht|système|sistema|"
       "system",
       r"(?:^|\n)\s*(?:systemhinweis|systemnachricht|note système|message système"
       r"|nota di sistema|messaggio di sistema|nota del sistema|mensaje del sistema"
       r"|system note|system notice)\s*:"),
    _r("ml.forget_all", "instruction_override", 0.4, "vergiss|oublie|olvida|dimentica|forget",
       r"\b(?:vergiss alles|oublie tout|olvida todo|dimentica tutto|forget everything)\b"),
    _r("ml.no_rules", "instruction_override", 0.8, "keine|aucune|tienes|hai|regeln|règle",
       r"\b(?:hast du|du hast) (?:jetzt |nun |ab sofort )?keine (?:regeln|einschr\w*|grenzen"
       r"|filter)\b|\btu n'as (?:plus |désormais )?(?:aucune|pas de) (?:règle|restriction"
       r"|limite)|\bno tienes (?:ninguna |ningún )?(?:reglas|restricciones|límites)\b"
       r"|\bnon hai (?:più )?(?:alcuna |nessuna )?(?:regol\w+|restrizion\w+|limit\w+)"),
    _r("ml.rules_void", "instruction_override", 0.8,
       "gelten|anwendbar|valgono|applicano|aplican|valen|appliquent",
       r"\b(?:richtlinien|regeln|einschr\w*|anweisungen|vorgaben)\b[^.]{0,30}\bnicht "
       r"(?:mehr )?(?:gelten|anwendbar)\b"
       r"|\b(?:linee guida|regole|restrizioni|istruzioni)\b[^.]{0,30}\bnon (?:valgono"
       r"|si applicano|contano)\b"
       r"|\b(?:reglas|normas|restricciones|instrucciones)\b[^.]{0,30}\bno (?:aplican"
       r"|se aplican|valen|cuentan)\b"
       r"|\b(?:règles|consignes|restrictions|instructions)\b[^.]{0,30}\bne s'appliquent"
       r" (?:plus|pas)\b"),
    _r("ml.without_limits", "instruction_override", 0.5, "ohne|senza|sin|sans",
       r"\b(?:ohne einschr\w+|senza restrizioni|sin restricciones|sans (?:aucune )?"
       r"restrictions?|ohne (?:regeln|grenzen|filter))\b"),
    _r("ml.new_instructions", "instruction_override", 0.5, "neue|nouvelles|nuevas|nuove",
       r"\b(?:neue (?:anweisung\w*|regeln|befehle|aufgabe)|nouvelles (?:instructions|consignes"
       r"|règles)|nuevas (?:instrucciones|reglas)|nuove (?:istruzioni|regole))\s*:"),
    _r("de.disclose", "exfiltration", 0.6, "preis|intern",
       r"\b(?:gibst|gib)\b[^.\n]{0,40}\b(?:intern\w*|vertraulich\w*|geheim\w*) "
       r"(?:daten|informationen|dokumente)\b[^.\n]{0,10}\bpreis\b"),
    _r("en.whatever_forbidden", "instruction_override", 0.8, "whatever|forbid|prohibit",
       r"\bwhatever (?:your|the) (?:rules|guidelines|polic(?:y|ies)|instructions|developers?)"
       r" (?:forbid|prohibit|disallow|say not to)"),
    _r("en.whatever_told", "instruction_override", 0.8,
       "ignor|disregard|forget|aside|attention|heed",
       r"\b(?:ignore|disregard|forget|set aside|pay no attention to|pay no heed to)\s+"
       r"(?:whatever|what|anything|everything|all)\s+(?:the |your )?(?:developers?|system"
       r"|operator|creators?|you were|you've been|you have been|they)\b[^.\n]{0,20}"
       r"\b(?:told|said|instructed|gave|wrote|set)"
       r"|\b(?:pay no attention|pay no heed) to (?:the |your |any |all )?(?:earlier|previous"
       r"|prior|above|original|system|developer'?s?) (?:guidance|instructions|rules|prompt"
       r"|directions|messages?)"),
    _r("en.prefix_forcing", "role_play", 0.4, "start|begin",
       r"\b(?:start|begin) (?:every|each|all|your) (?:answer|reply|response|message)s? with\b"),
    _r("en.evil_twin", "role_play", 0.8, "evil|dark|shadow|unfilter|uncensor",
       r"\byou are (?:now )?(?:my |an? |the )?(?:evil|dark|unfiltered|uncensored|shadow)"
       r" (?:twin|side|alter ego|version|clone)\b"),
    _r("sys.above_extract", "system_prompt", 0.8, "above|before|starting|preceding",
       r"\b(?:print|repeat|output|show|write|copy|display)\w*\b[^\n]{0,30}\b(?:the |all |any )?"
       r"(?:text|words|content|lines|messages?|everything)\s+(?:above|before|preceding)\s+"
       r"(?:this (?:line|message)|my first (?:message|line)|the first (?:message|user message)"
       r"|our conversation)"
       r"|\bstarting with (?:the words? )?[\"'\u201c]?you are\b"
       r"|\b(?:everything|all text|all the text) (?:before|above|preceding) (?:my|the) first"
       r" (?:message|line|prompt)"),
    _r("conceal", "instruction_override", 0.5, "tell|inform|mention|hidden|hide|reveal|secret",
       r"\b(?:do not|don't|never) (?:tell|inform|mention|notify|alert)\b[^.\n]{0,20}\b"
       r"(?:the (?:user|human|operator|owner)(?!'s)|anyone|this (?:instruction|note|message)"
       r"|the changes|about this)"
       r"|\b(?:keep|hide) this (?:hidden |secret )?from (?:the )?(?:user|human|operator)s?\b"
       r"|\bnever reveal this (?:note|instruction|message|text)\b"),
    _r("auth.claimed", "instruction_override", 0.4, "already|authori|approved",
       r"\b(?:has|have) already (?:authori[sz]ed|approved|consented to) this\b"),
    _r("auth.no_confirm", "instruction_override", 0.5, "confirm|approval|permission",
       r"\bno (?:confirmation|approval|permission|review) (?:is )?(?:needed|required"
       r"|necessary)\b"),
    _r("hijack.user_request", "instruction_override", 0.8,
       "ignor|disregard|forget|ignora|olvida|dimentica|ignorier",
       r"\b(?:ignore|disregard|forget|skip)\s+(?:the |this )?user'?s?\s+(?:question|request"
       r"|message|task|prompt|query|instructions)"
       r"|\b(?:ignora|ignore) la (?:pregunta|petición|solicitud|richiesta|domanda|demande"
       r"|question) (?:del usuario|dell'utente|de l'utilisateur)"
       r"|\bignorier\w* (?:die )?(?:frage|anfrage|bitte) des (?:nutzers|benutzers)"),
    _r("ai.addressed_more", "addressed_to_ai", 0.4, "ai|assistant|agent|bot|llm|model|reads",
       r"\bai[_ ](?:instructions?|note|prompt)\s*:"
       r"|\b(?:an? |the |any )?(?:assistant|ai|agent|model|llm)s? (?:reads?|sees|opens"
       r"|summari[sz]es|processes) this\b"
       r"|@(?:assistant|ai|bot|agent|claude|gpt|copilot|llm)\b"
       r"|\b(?:text|note|message|instructions?) for (?:ai|llm|language) (?:models?|agents?"
       r"|assistants?)\b"
       r"|\bai (?:reviewers?|agents?|assistants?|bots?|models?|readers?)\s*:"
       r"|\binstruction to the (?:ai|assistant|model)\b"),
    _r("ai.response_hook_more", "addressed_to_ai", 0.4, "every|each|all|answer",
       r"\b(?:to|in|at the end of|after) (?:every|each|all) (?:future )?(?:answer|reply"
       r"|response|message)s?\b"),
    _r("act.destructive_more", "instruction_override", 0.4, "delete|close|remove|drop|force",
       r"\b(?:delete|remove|drop|force-push)\b[^.\n]{0,30}\b(?:branch|branches|release"
       r"|issues|pull requests|commits|history)\b|\bclose all (?:other )?(?:open )?issues\b"),
    _r("approve.pr", "instruction_override", 0.5, "approve|merge",
       r"\b(?:approve|merge) (?:this|the) (?:pr|pull request|merge request|change|deployment)s?"
       r" (?:automatically|without (?:review|checks))"),
    _r("ml.addressed", "addressed_to_ai", 0.4, "hinweis|nachricht|note|nota|mensaje|messaggio",
       r"\b(?:hinweis|nachricht|anweisung|notiz) (?:für|an) (?:die |den )?(?:ki|assistent\w*"
       r"|bot|agent\w*)\b|\bnote pour l'(?:ia|assistant)|\bnota para (?:la ia|el asistente)"
       r"|\bnota per (?:l'ia|l'assistente)|\bmessaggio per (?:l'ia|l'assistente)"),
    _r("ml.pretend_no_rules", "instruction_override", 0.8,
       "pretend|fais|faites|finge|finta|tu|als",
       r"\bpretend (?:that )?you (?:have|had) no (?:rules|restrictions|limits|guidelines)"
       r"|\b(?:fais|faites) comme si (?:tu n'avais|vous n'aviez) (?:aucune|pas de) (?:règle"
       r"|restriction|limite)|\bfinge que no tienes (?:reglas|restricciones|límites)"
       r"|\bfai finta di non avere (?:regole|restrizioni|limiti)"
       r"|\btu so,? als (?:hättest|hättst) du keine (?:regeln|einschr\w*|grenzen)"),
    _r("de.beachte_nicht", "instruction_override", 0.85, "beachte",
       r"\bbeachte\b[^.]{0,40}\b(?:regeln|anweisung\w*|vorgaben|richtlinien)\b[^.]{0,10}"
       r"\bnicht(?: mehr)?\b"),
    _r("de.creds", "exfiltration", 0.6, "schick|sende|gib|zeig|nenn",
       r"\b(?:schick\w*|sende|gib|zeig\w*|nenn\w*)\b[^.]{0,30}\b(?:zugangsdaten|passw\w+"
       r"|api-?schlüssel|kennw\w+)"),
    _r("fr.password", "exfiltration", 0.6, "donne|montre|dis|révèle|mot",
       r"\b(?:donne|montre|dis|révèle|affiche)\w*(?:-moi)?\b[^.]{0,30}\bmot de passe"),
    # ---------------------------------------------------------------- German
    _r("de.ignore", "instruction_override", 0.85,
       "ignorier|vergiss|vergessen|missacht|übergeh|überspring|befolge nicht|nicht mehr",
       r"\b(?:ignorier\w*|vergiss|vergessen sie|missacht\w*|übergeh\w*|überspring\w*"
       r"|befolge nicht|folge nicht mehr)\b[^.!?\n]{0,50}\b(?:anweisung\w*|instruktion\w*"
       r"|regeln|vorgaben|richtlinien|befehle|anordnungen|einschränkungen)"),
    _r("de.persona", "role_play", 0.8, "du bist|ab jetzt|von nun an|ab sofort",
       r"\b(?:du bist (?:jetzt|nun|ab sofort|ab jetzt)|ab jetzt bist du|von nun an bist du)\b"
       r"[^.\n]{0,60}\b(?:uneingeschränkt\w*|ohne (?:\w+ )?(?:einschränkungen|regeln|filter"
       r"|grenzen|sicherheits\w*)|unzensiert\w*|frei von)"),
    _r("de.obey", "instruction_override", 0.6, "gehorch|befolg|nur noch mir|nur mir",
       r"\b(?:gehorchst|befolgst|folgst|hörst) du (?:nur noch|nur) (?:mir|meinen)\b"
       r"|\b(?:du gehorchst|gehorche) (?:nur noch |nur )?mir\b"),
    _r("de.extract", "system_prompt", 0.8, "prompt|anweisung|systemanweisung|systemprompt|zeig",
       r"\b(?:zeig\w*|gib|verrat\w*|nenn\w*|wiederhol\w*|ausgeben|gib aus)\b[^\n]{0,40}"
       r"\b(?:dein\w*|ihr\w*) (?:\w+ )?(?:system ?prompt|systemanweisung\w*|anweisungen"
       r"|versteckten anweisungen)"),
    _r("de.exfil", "exfiltration", 0.8, "sende|schick|lade|übermittl|leite",
       r"\b(?:sende|schicke?|lade|übermittle|leite)\b[^\n]{0,80}\b(?:passw\w+|schlüssel|e-mails"
       r"|mails|nachrichten"
       r"|zugangsdaten|api-?keys?|\.env|datei\w*|inhalt\w*|geheimnis\w*|tokens?)\b[^\n]{0,60}"
       r"(?:https?://|@|\ban\b|\bweiter\b)"),
    _r("de.password", "exfiltration", 0.6, "passwort|zugangsdaten",
       r"\b(?:gib|zeig\w*|verrat\w*|nenn\w*)\b[^.\n]{0,30}\b(?:\w*passwort|zugangsdaten"
       r"|api-?schlüssel)"),
    _r("de.exec", "instruction_override", 0.4, "führe|befehl",
       r"\bführe\b[^.\n]{0,40}\bbefehl\w* aus\b|\bführe den folgenden befehl\b"),
    # ---------------------------------------------------------------- French
    _r("fr.ignore", "instruction_override", 0.85,
       "ignor|oubli|tiens plus compte|tenez plus compte|fais abstraction|ne suis plus",
       r"\b(?:ignore[sz]?|ignorer|oublie[sz]?|oublier|ne tiens plus compte|ne tenez plus compte"
       r"|fais abstraction|ne suis plus|ne respecte plus)\b[^.!?\n]{0,50}\b(?:instructions?"
       r"|consignes?|règles?|directives?|restrictions?)\b"),
    _r("fr.persona", "role_play", 0.8, "tu es|vous êtes|désormais|dorénavant",
       r"\b(?:tu es|vous êtes) (?:maintenant|désormais|dorénavant|à présent)\b[^.\n]{0,60}"
       r"\b(?:sans (?:aucune |aucun )?(?:restriction|limite|filtre|règle|censure)\w*"
       r"|non censuré\w*|libéré\w*|sans limites)"),
    _r("fr.obey", "instruction_override", 0.6, "obéis|obéissez",
       r"\b(?:tu m'obéis|tu obéis (?:uniquement|seulement) à moi|obéis(?:-moi| uniquement à moi)"
       r"|vous m'obéissez)\b"),
    _r("fr.extract", "system_prompt", 0.8, "prompt|instructions|consignes",
       r"\b(?:révèle\w*|affiche\w*|montre\w*|donne\w*|répète\w*|dis-moi)\b[^\n]{0,40}"
       r"\b(?:(?:ton|tes|votre|vos) (?:\w+ )?(?:prompt|instructions|consignes)"
       r"|instructions cachées|prompt système)"),
    _r("fr.exfil", "exfiltration", 0.8, "envoie|envoyez|transmet|transfér|copie",
       r"\b(?:envoie\w*|envoyez|transmet\w*|transfère\w*|transférez|copie\w*)\b[^\n]{0,80}"
       r"\b(?:clés? api|mots? de passe|identifiants|secrets?|fichiers?|jetons?|tokens?"
       r"|donn[ée]es clients?)\b"),
    _r("fr.exec", "instruction_override", 0.4, "exécute", r"\bexécute\w*\b[^.\n]{0,30}"
       r"\bcommande\b"),
    # ---------------------------------------------------------------- Spanish
    _r("es.ignore", "instruction_override", 0.85,
       "ignor|olvid|no sigas|no siga|omit|descart|haz caso omiso",
       r"\b(?:ignora|ignore|ignorar|olvida|olvide|olvidar|no sigas|no siga|omite|descarta"
       r"|haz caso omiso)\b[^.!?\n]{0,50}\b(?:instrucciones|reglas|indicaciones|directrices"
       r"|normas|restricciones)\b"),
    _r("es.persona", "role_play", 0.8, "eres|actúa|actua",
       r"\b(?:(?:ahora|a partir de ahora|desde ahora) eres|actúa como)\b[^.\n]{0,60}"
       r"\b(?:sin (?:ninguna |ningún )?(?:restricci\w+|filtros?|límites?|reglas|censura)"
       r"|sin censura|libre de)"),
    _r("es.obey", "instruction_override", 0.6, "obedec",
       r"\b(?:solo|sólo|solamente) me obedeces\b|\bme obedeces (?:solo|sólo) a mí\b"
       r"|\bobedéceme\b"),
    _r("es.extract", "system_prompt", 0.8, "prompt|instrucciones",
       r"\b(?:revela\w*|muestra\w*|muéstrame|dime|repite|enséñame)\b[^\n]{0,40}"
       r"\b(?:(?:tu|tus) (?:\w+ )?(?:prompt|instrucciones)|instrucciones ocultas"
       r"|prompt del sistema)"),
    _r("es.exfil", "exfiltration", 0.8, "envía|envia|manda|sube|transfier|reenvía",
       r"\b(?:envía|envia|manda|sube|transfiere|reenvía)\b[^\n]{0,80}\b(?:claves?|contraseñas?"
       r"|correos|mensajes|emails"
       r"|credenciales|secretos?|archivos?|tokens?|contenido)\b"),
    _r("es.password", "exfiltration", 0.6, "contraseña|credenciales",
       r"\b(?:muéstrame|muestra|dame|dime|revela)\b[^.\n]{0,30}\b(?:la )?contraseña"),
    _r("es.exec", "instruction_override", 0.4, "ejecuta",
       r"\bejecuta\b[^.\n]{0,30}\bcomando\b"),
    # ---------------------------------------------------------------- Italian
    _r("it.ignore", "instruction_override", 0.85,
       "ignora|dimentic|non seguire|trascura|tralascia",
       r"\b(?:ignora|ignorare|dimentica|dimenticare|non seguire|trascura|tralascia)\b"
       r"[^.!?\n]{0,50}\b(?:istruzioni|regole|indicazioni|direttive|restrizioni)\b"),
    _r("it.persona", "role_play", 0.8, "sei|comportati",
       r"\b(?:(?:ora|adesso|da ora in poi|d'ora in poi) sei|comportati come)\b[^.\n]{0,60}"
       r"\b(?:senza (?:alcuna |alcun )?(?:restrizion\w+|limit\w+|filtr\w+|regol\w+|censura)"
       r"|non censurat\w+)"),
    _r("it.obey", "instruction_override", 0.6, "obbedisci",
       r"\bobbedisci (?:solo|soltanto|solamente) a me\b|\bobbediscimi\b"),
    _r("it.extract", "system_prompt", 0.8, "prompt|istruzioni",
       r"\b(?:mostra\w*|rivela\w*|dimmi|ripeti|stampa)\b[^\n]{0,40}"
       r"\b(?:(?:il tuo|i tuoi|le tue|tuo|tue) (?:\w+ )?(?:prompt|istruzioni)"
       r"|istruzioni nascoste|prompt di sistema)"),
    _r("it.exfil", "exfiltration", 0.8, "invia|manda|carica|inoltra",
       r"\b(?:invia|manda|carica|inoltra)\b[^\n]{0,80}\b(?:chiavi|password|credenziali"
       r"|segreti|file|token)\b"),
    _r("it.password", "exfiltration", 0.6, "password|dimmi|dammi|mostra|rivela",
       r"\b(?:dimmi|dammi|mostra\w*|rivela)\b[^.\n]{0,30}\bpassword\b"),
    _r("it.exec", "instruction_override", 0.4, "esegui",
       r"\besegui\b[^.\n]{0,30}\bcomando\b"),
)

#: every rule key
ALL_KEYS = frozenset(k for r in RULES for k in r.keys)
#: key -> the indices in RULES of the rules it wakes
_RULES_BY_KEY: dict[str, list[int]] = {}
for _i, _rule in enumerate(RULES):
    for _k in _rule.keys:
        _RULES_BY_KEY.setdefault(_k, []).append(_i)
del _i, _rule, _k
