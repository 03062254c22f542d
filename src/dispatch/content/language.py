"""The language of an issue: its tag, its direction, its dates, and the few words dispatch
itself writes around the article.

A tag comes from front matter ``lang:``, else ``DISPATCH_LANGUAGE``, else the article's own
text: the script decides (Hebrew, Greek, Cyrillic, CJK, Arabic script told apart into Arabic,
Persian, Urdu, Pashto and Sorani Kurdish by their letters), and for Latin script a count of the
commonest short words. Nothing here needs a model or the network; what cannot be told is "".
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

from babel import Locale, UnknownLocaleError
from babel.dates import format_date

FALLBACK = "en"
SAMPLE_CHARS = 6000  # enough text to tell a language, little enough to stay instant

_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_RTL_SCRIPTS = {"arab", "hebr", "thaa", "syrc", "nkoo", "adlm", "rohg", "mand", "samr"}
_RTL_LANGUAGES = {"ar", "he", "iw", "fa", "ur", "ps", "ckb", "sd", "ug", "yi", "dv", "syr", "ji"}

# --- tags and direction ----------------------------------------------------------------------


def normalise_tag(value: object) -> str:
    """``pt_br`` → ``pt-BR``; "" for anything that is not a language tag."""
    text = str(value or "").strip().replace("_", "-")
    if not _TAG.match(text):
        return ""
    first, *rest = text.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():
            parts.append(part.title())  # script: Latn, Arab
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            parts.append(part.upper())  # region: BR, 419
        else:
            parts.append(part.lower())
    return "-".join(parts)


def _locale(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag, sep="-")
    except (UnknownLocaleError, ValueError, TypeError):
        primary = tag.split("-", maxsplit=1)[0]
        try:
            return Locale.parse(primary) if primary != tag else None
        except (UnknownLocaleError, ValueError, TypeError):
            return None


def direction(tag: str) -> str:
    """``rtl`` for a right-to-left language or script (``ar``, ``he``, ``fa``, ``ur``,
    ``az-Arab`` …), else ``ltr``."""
    parts = tag.lower().split("-")
    script = next((p for p in parts[1:] if len(p) == 4 and p.isalpha()), "")
    if script:
        return "rtl" if script in _RTL_SCRIPTS else "ltr"
    if parts[0] in _RTL_LANGUAGES:
        return "rtl"
    locale = _locale(tag)
    return "rtl" if locale is not None and locale.character_order == "right-to-left" else "ltr"


# --- detection -------------------------------------------------------------------------------

_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"), (0x0530, 0x058F, "armenian"),
    (0x0590, 0x05FF, "hebrew"), (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"),
    (0x08A0, 0x08FF, "arabic"), (0x0900, 0x097F, "devanagari"), (0x0980, 0x09FF, "bengali"),
    (0x0B80, 0x0BFF, "tamil"), (0x0E00, 0x0E7F, "thai"), (0x10A0, 0x10FF, "georgian"),
    (0x1100, 0x11FF, "hangul"), (0x1200, 0x137F, "ethiopic"), (0x3040, 0x30FF, "kana"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xAC00, 0xD7AF, "hangul"),
    (0xFB1D, 0xFB4F, "hebrew"), (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"),
)  # fmt: skip
_ONE_LANGUAGE_SCRIPTS = {
    "greek": "el", "armenian": "hy", "hebrew": "he", "devanagari": "hi", "bengali": "bn",
    "tamil": "ta", "thai": "th", "georgian": "ka", "hangul": "ko", "ethiopic": "am", "han": "zh",
}  # fmt: skip

# Letters that only some languages written in Arabic script use.
_URDU = set("ٹڈڑںےۓہۃھ")
_PASHTO = set("ټډړښږځڅۍې")
_SORANI = set("ێۆڵڕ")
_PERSIAN = set("پچژگکی")  # also in Urdu: tested after it
_ARABIC = set("ةيكى")  # Arabic yeh, kaf, teh marbuta, alef maksura

# The commonest short words of Latin-script languages: a text scores by how often they occur.
_STOPWORDS = {
    "en": "the and of to in is that for it with as was on are be by this from have which not",
    "fr": "le la les des et est un une du que dans pour qui sur pas au avec ce sont aux",
    "de": "der die das und ist nicht mit den von zu ein eine sich auf dem des auch für wird",
    "es": "el la los las de que y en un una es por con para del se al lo como más",
    "it": "il la di che e è un una per non con del della sono nel anche gli alla più",
    "pt": "o a os as de que e em um uma do da não para com por dos das mais",
    "nl": "de het een en van is dat op te in niet zijn met voor er ook aan",
    "sv": "och att det som en är på för med av inte till den har jag om",
    "da": "og at det som en er på for med af ikke til den har jeg de",
    "pl": "i w na nie się z że do to jest jak o po ale dla są",
    "tr": "ve bir bu da de için ile olarak çok daha gibi ama olan en",
    "id": "dan yang di ini itu dengan untuk dari dalam tidak akan pada adalah",
    "cs": "a je se na že v to s z do jsou jako ale by pro",
}  # fmt: skip
_STOPWORD_SETS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
_WORD = re.compile(r"[^\W\d_]+(?:[’'][^\W\d_]+)?")


def _script(char: str) -> str:
    code = ord(char)
    if code < 0x0250 or 0x1E00 <= code <= 0x1EFF:
        return "latin"
    for low, high, name in _SCRIPT_RANGES:
        if low <= code <= high:
            return name
    return "other"


def _arabic_script_language(letters: str) -> str:
    counts = Counter(letters)

    def share(chars: set[str]) -> int:
        return sum(counts[c] for c in chars)

    total = len(letters)
    for tag, marks in (("ur", _URDU), ("ps", _PASHTO), ("ckb", _SORANI)):
        if share(marks) >= max(3, total // 100):
            return tag
    return "fa" if share(_PERSIAN) > share(_ARABIC) else "ar"


def _cyrillic_language(letters: str) -> str:
    found = set(letters.lower())
    if found & set("їєґ") or ("і" in found and "ы" not in found):
        return "uk"
    if found & set("ђћџљњј"):
        return "sr"
    if found & set("ѓќѕ"):
        return "mk"
    if "ъ" in found and not found & set("ыэё"):
        return "bg"
    return "ru"


def _latin_language(text: str) -> str:
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return ""
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORD_SETS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    # a clear winner: common words make up a good part of the text, well ahead of the next
    if ranked[0] >= max(2, len(words) // 20) and ranked[0] >= ranked[1] * 1.25:
        return best
    return ""


def detect_language(text: str) -> str:
    """The language tag of ``text`` ("ar", "fa", "he", "ru", "fr" …), or "" if it cannot be told."""
    letters_by_script: dict[str, list[str]] = {}
    for char in text[:SAMPLE_CHARS]:
        if char.isalpha():
            letters_by_script.setdefault(_script(char), []).append(char)
    if not letters_by_script:
        return ""
    script, letters = max(letters_by_script.items(), key=lambda item: len(item[1]))
    if script == "latin":
        return _latin_language(text[:SAMPLE_CHARS])
    if script == "arabic":
        return _arabic_script_language("".join(letters))
    if script == "cyrillic":
        return _cyrillic_language("".join(letters))
    if script in {"han", "kana"} and "kana" in letters_by_script:
        return "ja"  # Japanese mixes kana into Han; Chinese has none
    return _ONE_LANGUAGE_SCRIPTS.get(script, "")


def choose_language(front_matter: object, setting: str, text: str) -> str:
    """Front matter ``lang:`` first, then ``DISPATCH_LANGUAGE``, then the article's own text."""
    return normalise_tag(front_matter) or normalise_tag(setting) or detect_language(text) or FALLBACK


# --- dates -----------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$")
# English without a region writes the day first ("14 March 2026"), as most English-speaking
# countries do; en-US keeps "March 14, 2026".
_DATE_LOCALES = {"en": "en_GB"}
_DIGITS = {"arab": "٠١٢٣٤٥٦٧٨٩", "arabext": "۰۱۲۳۴۵۶۷۸۹"}


def iso_date(value: str) -> str:
    """``2026-03-14`` (or an ISO date-time) → ``2026-03-14``; anything else → ""."""
    found = _ISO_DATE.match(value.strip())
    if not found:
        return ""
    try:
        return dt.date(int(found[1]), int(found[2]), int(found[3])).isoformat()
    except ValueError:
        return ""


def readable_date(value: str, tag: str) -> str:
    """An ISO date as a person writes it in the language ("14 March 2026", "14 مارس 2026");
    any other date exactly as written."""
    iso = iso_date(value)
    if not iso:
        return value.strip()
    locale = _locale(_DATE_LOCALES.get(tag, tag)) or Locale.parse(_DATE_LOCALES[FALLBACK])
    text = format_date(dt.date.fromisoformat(iso), format="long", locale=locale)
    digits = _DIGITS.get(locale.default_numbering_system or "")
    return text.translate(str.maketrans("0123456789", digits)) if digits else text


# --- the words dispatch writes around the article ----------------------------------------------

WORD_KEYS = (
    "view_in_browser", "issue", "by", "thanks", "reason", "unsubscribe_intro", "unsubscribe",
    "test_send", "links", "quotes",
)  # fmt: skip
_WORDS: dict[str, tuple[str, ...]] = {
    "en": (
        "View in browser",
        "Issue {n}",
        "By {author}",
        "Thanks for reading.",
        "You receive this newsletter at {email} because you signed up for it.",
        "No longer want these emails?",
        "Unsubscribe in one click",
        "Test send: this copy went only to you.",
        "Links:",
        "“”",
    ),
    "ar": (
        "عرض في المتصفح",
        "العدد {n}",
        "بقلم {author}",
        "شكرًا لقراءتك.",
        "تصلك هذه النشرة على {email} لأنك اشتركت فيها.",
        "لم تعد ترغب في هذه الرسائل؟",
        "ألغِ الاشتراك بنقرة واحدة",
        "إرسال تجريبي: وصلت هذه النسخة إليك وحدك.",
        "الروابط:",
        "«»",
    ),
    "he": (
        "הצגה בדפדפן",
        "גיליון {n}",
        "מאת {author}",
        "תודה על הקריאה.",
        "הידיעון הזה נשלח אל {email} כי נרשמת לקבל אותו.",
        "לא רוצים לקבל עוד את ההודעות האלה?",
        "ביטול המינוי בלחיצה אחת",
        "שליחת ניסיון: העותק הזה נשלח רק אליך.",
        "קישורים:",
        "„”",
    ),
    "fa": (
        "مشاهده در مرورگر",
        "شماره {n}",
        "به قلم {author}",
        "از اینکه خواندید سپاسگزاریم.",
        "این خبرنامه به نشانی {email} برای شما فرستاده می‌شود، چون در آن عضو شده‌اید.",
        "دیگر نمی‌خواهید این ایمیل‌ها را دریافت کنید؟",
        "لغو اشتراک با یک کلیک",
        "ارسال آزمایشی: این نسخه فقط برای شما فرستاده شد.",
        "پیوندها:",
        "«»",
    ),
    "ur": (
        "براؤزر میں دیکھیں",
        "شمارہ {n}",
        "تحریر: {author}",
        "پڑھنے کا شکریہ۔",
        "یہ نیوز لیٹر آپ کو {email} پر اس لیے ملتا ہے کہ آپ نے اس کے لیے سائن اپ کیا تھا۔",
        "اب یہ ای میلز نہیں چاہتے؟",
        "ایک کلک میں ان سبسکرائب کریں",
        "آزمائشی ترسیل: یہ نقل صرف آپ کو بھیجی گئی ہے۔",
        "روابط:",
        "“”",
    ),
    "fr": (
        "Voir dans le navigateur",
        "Numéro {n}",
        "Par {author}",
        "Merci de nous lire.",
        "Vous recevez cette lettre à l’adresse {email} suite à votre inscription.",
        "Vous ne souhaitez plus la recevoir\u202f?",
        "Se désabonner en un clic",
        "Envoi de test\u202f: cet exemplaire n’a été envoyé qu’à vous.",
        "Liens\u202f:",
        "«»",
    ),
    "de": (
        "Im Browser ansehen",
        "Ausgabe {n}",
        "Von {author}",
        "Danke fürs Lesen.",
        "Sie erhalten diesen Newsletter an {email}, weil Sie ihn abonniert haben.",
        "Sie möchten ihn nicht mehr erhalten?",
        "Mit einem Klick abbestellen",
        "Testversand: Diese Kopie ging nur an Sie.",
        "Links:",
        "„“",
    ),
    "es": (
        "Ver en el navegador",
        "Número {n}",
        "Por {author}",
        "Gracias por leernos.",
        "Recibes este boletín en {email} porque te suscribiste.",
        "¿Ya no quieres recibir estos correos?",
        "Cancelar la suscripción con un clic",
        "Envío de prueba: esta copia solo te llegó a ti.",
        "Enlaces:",
        "«»",
    ),
    "it": (
        "Visualizza nel browser",
        "Numero {n}",
        "Di {author}",
        "Grazie per averci letto.",
        "Ricevi questa newsletter all’indirizzo {email} perché hai scelto di iscriverti.",
        "Non vuoi più ricevere queste email?",
        "Annulla l’iscrizione con un clic",
        "Invio di prova: questa copia è arrivata solo a te.",
        "Link:",
        "«»",
    ),
    "pt": (
        "Ver no navegador",
        "Edição {n}",
        "Por {author}",
        "Obrigado pela leitura.",
        "Recebe esta newsletter em {email} porque se inscreveu.",
        "Não quer receber mais estes e-mails?",
        "Cancelar a inscrição com um clique",
        "Envio de teste: só este endereço recebeu esta cópia.",
        "Links:",
        "“”",
    ),
    "nl": (
        "Bekijk in je browser",
        "Editie {n}",
        "Door {author}",
        "Bedankt voor het lezen.",
        "Je ontvangt deze nieuwsbrief op {email} omdat je je hebt aangemeld.",
        "Wil je deze e-mails niet meer ontvangen?",
        "Met één klik afmelden",
        "Testverzending: alleen jij hebt dit exemplaar ontvangen.",
        "Links:",
        "“”",
    ),
    "ru": (
        "Открыть в браузере",
        "Выпуск {n}",
        "Автор: {author}",
        "Спасибо, что читаете.",
        "Вы получаете эту рассылку на адрес {email}, потому что подписались на неё.",
        "Больше не хотите получать эти письма?",
        "Отписаться в один клик",
        "Тестовая отправка: эта копия пришла только вам.",
        "Ссылки:",
        "«»",
    ),
}


def words(tag: str) -> dict[str, str]:
    """dispatch's own words in the language of ``tag`` (English where there is no translation;
    ``lang`` says which language the words are in, so a template can mark them)."""
    primary = tag.split("-", maxsplit=1)[0]
    used = primary if primary in _WORDS else FALLBACK
    found = dict(zip(WORD_KEYS, _WORDS[used], strict=True))
    return {"lang": used, "dir": direction(used), **found}
