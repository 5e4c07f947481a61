#!/usr/bin/env python
"""Write a deterministic document corpus and question set for measuring retrieval quality.

The corpus is text this script invents (public domain by construction), modelled on
Enclave's users: equipment and field-service manuals, service bulletins and visit
reports, contracts (service agreements, NDAs, leases, supply agreements) and internal
policies, as .md, .txt and .html. Near-duplicates are deliberate: the same clause in
many contracts with different numbers, the same procedure for several models, a
superseded policy next to the current one, so that finding the right passage needs
more than matching the topic.

    python scripts/retrieval_corpus.py OUT_DIR [--seed 7]

writes OUT_DIR/<documents> and OUT_DIR/questions.json: a list of
``{"q", "path", "answer", "style"}``. ``path`` is relative to OUT_DIR; ``answer`` is a
short substring that occurs exactly once in that file, inside the passage that answers
the question. ``style`` is ``keyword`` (the question reuses the document's words),
``paraphrase`` (different vocabulary), ``in-domain`` or ``off-topic``; the last two have
``path`` and ``answer`` null: nothing in the corpus answers them.

The same seed writes byte-identical files on every run and machine.
"""

from __future__ import annotations

import argparse
import html
import html.parser
import json
import random
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEED = 7
QUESTIONS_FILE = "questions.json"

# ---------------------------------------------------------------------------
# Documents as data, rendered to three formats
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Para | Bullets | Table


@dataclass
class Section:
    heading: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


@dataclass
class Fact:
    """One thing a question can ask: the answer is a substring of the passage that states it."""

    answer: str
    keyword: str
    paraphrase: str
    #: False when another document contradicts it (a bulletin revised the value).
    usable: bool = True


@dataclass
class Doc:
    """A document before rendering; ``stem`` is its path without the extension."""

    stem: str
    title: str
    meta: list[tuple[str, str]]
    sections: list[Section]
    fmt: str = "md"
    facts: list[Fact] = field(default_factory=list)
    #: The name that tells this document from its near-duplicates (a model, a counterparty).
    entity: str | None = None

    @property
    def rel(self) -> str:
        return f"{self.stem}.{self.fmt}"


def render(doc: Doc) -> str:
    """The file's text in its format."""
    if doc.fmt == "md":
        return _render_md(doc)
    if doc.fmt == "txt":
        return _render_txt(doc)
    return _render_html(doc)


def _render_md(doc: Doc) -> str:
    out = [f"# {doc.title}", ""]
    out += [f"**{key}:** {value}  " for key, value in doc.meta]
    out.append("")
    for section in doc.sections:
        out += ["#" * section.level + " " + section.heading, ""]
        for block in section.blocks:
            match block:
                case Para(text):
                    out += [text, ""]
                case Bullets(items, ordered):
                    out += [f"{i}. {item}" if ordered else f"- {item}" for i, item in enumerate(items, 1)]
                    out.append("")
                case Table(caption, header, rows):
                    out += [f"*{caption}*", ""]
                    out.append("| " + " | ".join(header) + " |")
                    out.append("|" + "|".join("---" for _ in header) + "|")
                    out += ["| " + " | ".join(row) + " |" for row in rows]
                    out.append("")
    return "\n".join(out).rstrip() + "\n"


# A character that never occurs in the corpus: answers are wrapped as one word.
_GLUE = "\x00"


def _wrap(text: str, protect: Sequence[str], indent: str = "", first: str | None = None) -> str:
    """Hard-wrap at 76 columns without ever breaking inside an answer (an answer split
    over two lines would not be a substring of the file)."""
    for phrase in protect:
        if " " in phrase and phrase in text:
            text = text.replace(phrase, phrase.replace(" ", _GLUE))
    wrapped = textwrap.fill(
        text,
        width=76,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapped.replace(_GLUE, " ")


def _render_txt(doc: Doc) -> str:
    protect = [fact.answer for fact in doc.facts]
    out = [doc.title.upper(), "=" * min(76, len(doc.title)), ""]
    out += [f"{key}: {value}" for key, value in doc.meta]
    out.append("")
    for section in doc.sections:
        heading = section.heading.upper() if section.level == 2 else section.heading
        out += ["", heading, ("-" if section.level == 2 else "~") * len(heading), ""]
        for block in section.blocks:
            match block:
                case Para(text):
                    out += [_wrap(text, protect), ""]
                case Bullets(items, ordered):
                    for i, item in enumerate(items, 1):
                        marker = f"  {i}) " if ordered else "  * "
                        out.append(_wrap(item, protect, indent=" " * len(marker), first=marker))
                    out.append("")
                case Table(caption, header, rows):
                    out += [caption, ""]
                    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
                    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
                    out += [line, "  ".join("-" * w for w in widths)]
                    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
                    out.append("")
    return "\n".join(out).rstrip() + "\n"


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 52em; margin: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #999; padding: 2px 6px; }}
</style>
</head>
<body>
<nav><a href="../index.html">Document library</a> | <a href="#top">Top</a></nav>
<main>
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _render_html(doc: Doc) -> str:
    out = [_HTML_HEAD.format(title=_esc(doc.title)).rstrip("\n"), f'<h1 id="top">{_esc(doc.title)}</h1>']
    if doc.meta:
        out.append("<dl>")
        out += [f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in doc.meta]
        out.append("</dl>")
    for section in doc.sections:
        tag = f"h{section.level}"
        out.append(f"<{tag}>{_esc(section.heading)}</{tag}>")
        for block in section.blocks:
            match block:
                case Para(text):
                    out.append(f"<p>{_esc(text)}</p>")
                case Bullets(items, ordered):
                    tag_list = "ol" if ordered else "ul"
                    out.append(f"<{tag_list}>")
                    out += [f"  <li>{_esc(item)}</li>" for item in items]
                    out.append(f"</{tag_list}>")
                case Table(caption, header, rows):
                    out += ["<table>", f"<caption>{_esc(caption)}</caption>", "<thead><tr>"]
                    out += [f"  <th>{_esc(h)}</th>" for h in header]
                    out += ["</tr></thead>", "<tbody>"]
                    for row in rows:
                        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
                    out += ["</tbody>", "</table>"]
    out += ["</main>", f"<footer><p>{_esc(doc.title)}. Internal document library export.</p></footer>"]
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Equipment manuals
# ---------------------------------------------------------------------------

Value = Callable[[random.Random], str]


def num(lo: float, hi: float, step: float = 1, unit: str = "", digits: int = 0) -> Value:
    """A value drawn from lo..hi in steps, formatted with a unit (1,000 separators)."""

    def draw(rng: random.Random) -> str:
        count = int(round((hi - lo) / step))
        value = lo + step * rng.randint(0, count)
        text = f"{value:,.{digits}f}"
        return f"{text} {unit}".strip() if unit else text

    return draw


def pick(*options: str) -> Value:
    return lambda rng: rng.choice(options)


@dataclass(frozen=True)
class Spec:
    label: str
    value: Value
    para: str


@dataclass(frozen=True)
class Task:
    task: str
    para: str
    #: Plausible intervals; each model draws one, distinct within its schedule.
    every: tuple[str, ...]


@dataclass(frozen=True)
class Procedure:
    title: str
    steps: tuple[str, ...]
    value: Value
    keyword: str
    para: str


@dataclass(frozen=True)
class Kind:
    """One kind of equipment: what its manuals say, with the numbers left to draw."""

    key: str
    noun: str
    models: tuple[tuple[str, str, str], ...]  # brand, model, fault-code prefix
    intro: tuple[str, ...]
    safety: tuple[str, ...]
    install: tuple[str, ...]
    operation: tuple[str, ...]
    specs: tuple[Spec, ...]
    tasks: tuple[Task, ...]
    procedures: tuple[Procedure, ...]
    faults: tuple[tuple[str, str], ...]


SHORT = ("Daily", "Weekly", "Monthly", "Every 250 operating hours")
MID = ("Every 3 months", "Every 6 months", "Every 500 operating hours", "Every 1,000 operating hours")
LONG = (
    "Annually",
    "Every 2 years",
    "Every 2,000 operating hours",
    "Every 4,000 operating hours",
    "Every 8,000 operating hours",
)
R_SHORT = ("Daily", "Weekly", "Monthly")
R_MID = ("Every 3 months", "Every 6 months", "Every 4 months")
R_LONG = ("Annually", "Every 2 years", "Every 3 years")

COMMON_SAFETY = (
    "Read this manual completely before installing, operating or servicing the {name}.",
    "Isolate and lock out the electrical supply before opening any cover; verify zero energy with an approved tester.",
    "Only trained and authorised personnel may carry out the procedures in this manual.",
    "Wear the personal protective equipment required by your site rules: safety glasses, gloves and safety footwear as a minimum.",
    "Never bypass or disable a protective device, interlock or guard.",
    "Keep the area around the {name} clear of combustible material and standing water.",
    "Use only genuine {brand} spare parts; substitutes may void the warranty and the safety certification.",
)

COMMON_ABOUT = (
    "This manual covers installation, operation, routine maintenance and fault finding for the {brand} {name}.",
    "Keep it with the equipment and make it available to everyone who works on the {name}.",
    "Figures and values in this manual apply to the {name} only; other {brand} models use different settings.",
    "Where a local regulation is stricter than this manual, the regulation applies.",
    "Warnings mark a hazard that can cause injury; cautions mark a risk of damage to the equipment.",
    "Illustrations show a typical configuration and may differ in detail from your unit.",
    "{brand} improves its products continually and may change specifications without notice.",
    "Record the serial number from the rating plate before you contact service.",
)

WARRANTY = (
    "Warranty claims must include the serial number, the commissioning date and the maintenance record.",
    "The warranty does not cover wear parts, damage from incorrect installation, or use outside the published limits.",
    "Service contracts with extended cover are available from authorised {brand} dealers.",
    "For technical support, have the model, serial number and any displayed fault code ready before calling.",
)

PUMP = Kind(
    key="pump",
    noun="centrifugal pump",
    models=(
        ("Hydrane", "HX-200", "E"),
        ("Hydrane", "HX-300", "E"),
        ("Hydrane", "HX-400", "E"),
        ("Hydrane", "HX-600", "E"),
        ("Corvel", "CP-50", "A"),
        ("Corvel", "CP-80", "A"),
    ),
    intro=(
        "The {name} is an end-suction, single-stage centrifugal pump for clean water and mildly aggressive liquids.",
        "It is designed for building services, irrigation, process water transfer and pressure boosting.",
        "The back pull-out design lets the rotating assembly be removed without disturbing the pipework or the motor.",
        "A cast iron volute casing and a stainless steel impeller are standard; bronze and duplex options are available.",
        "The shaft is sealed by a single balanced mechanical seal to EN 12756.",
    ),
    safety=(
        "Never run the {name} dry, even for a few seconds: the mechanical seal will be destroyed.",
        "Do not operate the pump against a closed discharge valve for more than one minute.",
        "The casing may contain hot or pressurised liquid; depressurise and drain before opening.",
    ),
    install=(
        "Mount the {name} on a rigid, level base plate grouted to a concrete foundation.",
        "Support suction and discharge pipework independently so that no pipe load is transferred to the pump flanges.",
        "Keep the suction pipe as short and straight as possible, with a straight length of at least five pipe diameters before the inlet.",
        "Use an eccentric reducer, flat side up, on the suction side to prevent air pockets.",
        "Install an isolating valve and a non-return valve on the discharge side.",
        "Check the direction of rotation by jogging the motor briefly; it must match the arrow on the casing.",
    ),
    operation=(
        "Before the first start, open the suction valve fully and fill the casing and suction pipe with liquid.",
        "Start the motor with the discharge valve slightly open, then open it slowly to the duty point.",
        "Check that the discharge pressure settles and that there is no unusual noise or vibration.",
        "In normal operation the mechanical seal may show a few drops of leakage per hour while bedding in.",
        "To stop, close the discharge valve before switching off the motor to limit water hammer.",
    ),
    specs=(
        Spec("Rated flow", num(12, 180, 2, "m³/h"), "How much liquid can the {name} move in an hour?"),
        Spec("Maximum head", num(18, 95, 1, "m"), "How high can the {name} lift water?"),
        Spec("Motor power", num(1.5, 45, 0.5, "kW", 1), "How big is the electric motor that drives the {name}?"),
        Spec(
            "Maximum liquid temperature",
            num(80, 140, 5, "°C"),
            "How hot can the fluid get before the {name} can no longer handle it?",
        ),
        Spec("Dry weight", num(38, 310, 1, "kg"), "How heavy is the {name} when it is empty?"),
        Spec(
            "Suction / discharge",
            pick("DN65 / DN50", "DN80 / DN65", "DN100 / DN80", "DN125 / DN100", "DN50 / DN40"),
            "What size are the inlet and outlet pipe connections on the {name}?",
        ),
    ),
    tasks=(
        Task(
            "Check bearing temperature",
            "How often do I need to measure how hot the {name}'s bearings are running?",
            SHORT,
        ),
        Task("Regrease motor bearings", "How frequently do the {name}'s motor bearings need fresh lubricant?", LONG),
        Task("Replace the mechanical seal", "When does the {name}'s shaft seal have to be renewed?", LONG),
        Task(
            "Inspect the coupling insert",
            "How often should the rubber element between the motor and the {name} be looked at?",
            MID,
        ),
        Task(
            "Clean the suction strainer", "How regularly should the screen on the {name}'s inlet be cleared out?", SHORT
        ),
        Task("Carry out a vibration survey", "How often should someone measure how much the {name} shakes?", MID),
    ),
    procedures=(
        Procedure(
            "Replacing the impeller",
            (
                "Isolate the motor, close the suction and discharge valves and drain the casing.",
                "Remove the coupling guard and the spacer of the coupling.",
                "Undo the casing bolts and withdraw the back pull-out assembly.",
                "Hold the shaft with a strap wrench and remove the impeller nut (left-hand thread).",
                "Fit the new impeller, key and O-ring; on the {name}, tighten the impeller nut to {v} with a calibrated torque wrench.",
                "Refit the back pull-out assembly with a new casing gasket and tighten the casing bolts crosswise.",
                "Refit the coupling spacer and guard, then prime and start as for first commissioning.",
            ),
            num(40, 140, 5, "N·m"),
            "What torque should the impeller nut be tightened to on the {name}?",
            "How tight does the fastener that holds the spinning rotor on the {name} need to be?",
        ),
        Procedure(
            "Priming",
            (
                "Close the discharge valve and open the suction valve.",
                "Remove the priming plug at the top of the casing.",
                "Fill the {name} casing through the priming plug with approximately {v} of clean liquid until it overflows.",
                "Turn the shaft by hand a few times to release trapped air, top up, and refit the plug.",
            ),
            num(2.5, 18, 0.5, "litres", 1),
            "How much liquid is needed to prime the {name} casing?",
            "Before the first start, how much water do I pour into the {name} to get it going?",
        ),
        Procedure(
            "Setting the seal flush",
            (
                "Connect the flush line from the discharge branch to the seal chamber.",
                "Open the flush needle valve one full turn.",
                "Set the seal flush pressure on the {name} to {v} and lock the valve.",
                "Check after 30 minutes that the seal chamber is warm but not hot to the touch.",
            ),
            pick(*(f"{x / 10:.1f} bar above suction pressure" for x in range(5, 31, 1))),
            "What seal flush pressure is required on the {name}?",
            "How much pressure should the liquid feeding the {name}'s shaft seal have?",
        ),
        Procedure(
            "Aligning the coupling",
            (
                "Mount a dial indicator on the pump half of the coupling.",
                "Measure angular and parallel misalignment at four points 90 degrees apart.",
                "Parallel misalignment on the {name} coupling must not exceed {v}; shim the motor feet to correct it.",
                "Tighten the motor foot bolts and measure again.",
            ),
            pick("0.03 mm", "0.05 mm", "0.08 mm", "0.10 mm", "0.12 mm", "0.15 mm"),
            "What is the maximum parallel misalignment allowed for the {name} coupling?",
            "How far off-centre may the motor shaft sit from the {name} shaft?",
        ),
    ),
    faults=(
        ("Low suction pressure", "Check that the suction valve is fully open and the strainer is clean."),
        ("Dry running detected", "Stop the pump, prime the casing and find the cause of the loss of liquid."),
        ("Motor winding overtemperature", "Check ventilation and the current drawn against the rating plate."),
        ("Seal leak detected", "Replace the mechanical seal; inspect the shaft sleeve for scoring."),
        ("High discharge pressure", "Check for a closed or blocked discharge valve."),
        ("Phase loss", "Check the supply fuses and the terminal connections."),
        ("Bearing overtemperature", "Regrease or replace the bearings; check alignment."),
        ("Overcurrent", "Check the impeller for blockage and the motor for a short circuit."),
        (
            "Pressure transmitter fault",
            "Check the transmitter wiring and replace the transmitter if the signal is out of range.",
        ),
        ("Flow below minimum", "Open the discharge valve or fit a minimum-flow bypass."),
        ("Cavitation suspected", "Increase the suction head or reduce the flow rate."),
    ),
)

GENERATOR = Kind(
    key="generator",
    noun="diesel generating set",
    models=(
        ("Voltmark", "VG-20", "F"),
        ("Voltmark", "VG-45", "F"),
        ("Voltmark", "VG-90", "F"),
        ("Voltmark", "VG-150", "F"),
        ("Dunmore", "DG-30", "W"),
        ("Dunmore", "DG-60", "W"),
    ),
    intro=(
        "The {name} is a water-cooled diesel generating set for standby and prime power.",
        "It combines a four-stroke turbocharged engine, a brushless self-excited alternator and a digital control module on a common skid.",
        "The sound-attenuated canopy is weatherproof and has lockable doors on both sides for service access.",
        "An integrated base fuel tank gives extended running without refuelling.",
        "The control module starts the set automatically on mains failure when it is paired with a transfer switch.",
    ),
    safety=(
        "Exhaust gas contains carbon monoxide: never run the {name} indoors or in a poorly ventilated enclosure.",
        "The alternator output can kill; never work on the output terminals while the engine can start automatically.",
        "Switch the control module to OFF and remove the battery negative lead before any maintenance.",
        "Hot coolant can scald: do not remove the radiator cap while the engine is hot.",
        "Diesel fuel is flammable; no smoking or open flames near the set.",
    ),
    install=(
        "Place the {name} on a level concrete plinth able to carry the wet weight of the set.",
        "Leave at least one metre of clearance on every side for airflow and service access.",
        "Route the exhaust away from windows, doors and air intakes.",
        "Connect the load through a correctly rated circuit breaker and, for standby duty, an automatic transfer switch.",
        "Earth the frame and the alternator neutral according to the local wiring regulations.",
        "Fill the base tank with clean diesel to EN 590 and bleed the fuel system before the first start.",
    ),
    operation=(
        "Check the oil level, coolant level and fuel level before every manual start.",
        "Select MANUAL on the control module and press START; the engine cranks for up to three attempts.",
        "Allow the engine to warm up for three minutes before connecting the load.",
        "In AUTO mode the set starts on mains failure, takes the load, and returns to standby after mains is restored and a cool-down period has run.",
        "Do not run the engine for long periods at less than 30 percent load; this causes wet stacking.",
    ),
    specs=(
        Spec("Prime power", num(20, 180, 5, "kVA"), "How much electricity can the {name} supply continuously?"),
        Spec("Fuel tank capacity", num(90, 600, 10, "litres"), "How much diesel fits in the {name}'s built-in tank?"),
        Spec(
            "Fuel consumption at 75% load",
            num(4, 38, 0.1, "l/h", 1),
            "How much fuel does the {name} burn per hour at three-quarters output?",
        ),
        Spec(
            "Engine oil capacity",
            num(6, 28, 0.5, "litres of oil", 1),
            "How much lubricant does the {name}'s engine take?",
        ),
        Spec("Noise level at 7 m", num(62, 78, 1, "dB(A)"), "How loud is the {name} from seven metres away?"),
        Spec("Wet weight", num(780, 2900, 10, "kg"), "How heavy is the {name} with fuel and fluids in it?"),
    ),
    tasks=(
        Task(
            "Change engine oil and filter",
            "How often does the {name}'s engine lubricant need draining and renewing?",
            MID,
        ),
        Task("Replace fuel filters", "When should the elements that clean the {name}'s diesel be swapped?", MID),
        Task(
            "Replace the air cleaner element",
            "How often does the {name}'s intake air filter need a new cartridge?",
            LONG,
        ),
        Task(
            "Test coolant antifreeze concentration",
            "How often should I check the frost protection of the {name}'s radiator fluid?",
            LONG,
        ),
        Task("Replace drive belts", "When do the {name}'s fan belts need renewing?", LONG),
        Task(
            "Exercise the set under load",
            "How often should the {name} be run with a real electrical load on it?",
            SHORT,
        ),
    ),
    procedures=(
        Procedure(
            "Changing the engine oil",
            (
                "Run the engine for five minutes to warm the oil, then stop it and isolate the starter.",
                "Remove the sump drain plug and let the oil drain completely into a suitable container.",
                "Refit the sump drain plug on the {name} with a new sealing washer and torque it to {v}.",
                "Fill with oil of the grade given in the specifications and check the level on the dipstick.",
            ),
            num(25, 90, 5, "N·m"),
            "What is the sump drain plug torque on the {name}?",
            "How tight should the plug at the bottom of the {name}'s oil pan be done up?",
        ),
        Procedure(
            "Load bank test",
            (
                "Connect a resistive load bank to the output terminals through the test breaker.",
                "Start the engine and let it reach operating temperature.",
                "Run the {name} at {v} for at least two hours, recording voltage, frequency and coolant temperature every 15 minutes.",
                "Reduce the load in steps before stopping the engine.",
            ),
            pick(*(f"{x} percent of rated load" for x in range(50, 101, 5))),
            "At what load should the annual load bank test be run on the {name}?",
            "How hard should the {name} be worked during its yearly test against a dummy load?",
        ),
        Procedure(
            "Checking the starter battery",
            (
                "Clean the battery terminals and check that the clamps are tight.",
                "Measure the resting voltage with the charger switched off for at least one hour.",
                "A fully charged starter battery on the {name} should read at least {v} at rest.",
                "Replace a battery that fails a load test, whatever its resting voltage.",
            ),
            pick("12.4 V", "12.5 V", "12.6 V", "24.8 V", "25.0 V", "25.2 V"),
            "What minimum resting voltage should the {name} starter battery show?",
            "What reading tells me the {name}'s cranking battery is properly charged?",
        ),
        Procedure(
            "Adjusting valve clearances",
            (
                "Let the engine cool to below 40 °C and remove the rocker covers.",
                "Turn the crankshaft to top dead centre on the compression stroke of cylinder 1.",
                "Set the intake valve clearance on the {name} to {v} with the engine cold, using a feeler gauge.",
                "Repeat for each cylinder in firing order and refit the covers with new gaskets.",
            ),
            pick("0.20 mm", "0.25 mm", "0.30 mm", "0.35 mm", "0.40 mm"),
            "What is the intake valve clearance for the {name}?",
            "How big a gap should the inlet tappets on the {name} have?",
        ),
    ),
    faults=(
        ("Low oil pressure shutdown", "Check the oil level; if correct, check the pressure switch and the oil pump."),
        ("High coolant temperature", "Check the coolant level, the radiator core and the fan belt."),
        ("Overspeed", "Check the governor and the fuel rack linkage."),
        ("Fail to start", "Check fuel supply, battery voltage and the starter motor."),
        ("Underfrequency", "Reduce the load or check the governor setting."),
        ("Overvoltage", "Check the automatic voltage regulator and its sensing leads."),
        ("Battery charger failure", "Check the charger supply fuse and output."),
        ("Low fuel level", "Refuel the base tank and check for leaks."),
        ("Emergency stop activated", "Release the emergency stop button and reset the control module."),
        ("Earth fault", "Isolate the load and test the insulation resistance of the output cables."),
        ("Alternator overload", "Reduce the connected load to within the rating."),
    ),
)

COMPRESSOR = Kind(
    key="compressor",
    noun="air compressor",
    models=(
        ("Airlon", "AR-110", "C"),
        ("Airlon", "AR-150", "C"),
        ("Airlon", "AR-220", "C"),
        ("Kessler", "K-7", "K"),
        ("Kessler", "K-11", "K"),
        ("Kessler", "K-15", "K"),
    ),
    intro=(
        "The {name} is an oil-injected rotary screw air compressor for industrial compressed air.",
        "The airend, motor, oil separator, cooler and controller are mounted in a single acoustic enclosure.",
        "The electronic controller manages load and unload cycles to keep the network pressure within the set band.",
        "An integrated refrigerated dryer is available as an option.",
        "Cooling air is drawn in at the front and discharged through the roof of the enclosure.",
    ),
    safety=(
        "Compressed air can cause serious injury: never direct it at a person.",
        "Release all pressure from the {name} and the receiver before opening any part of the system.",
        "Never adjust the safety valve; replace it if it fails its test.",
        "Hot oil and hot surfaces: allow the unit to cool before servicing.",
    ),
    install=(
        "Install the {name} indoors in a clean, dry, frost-free room with adequate ventilation.",
        "The room temperature must stay between 5 °C and 40 °C during operation.",
        "Connect the compressed air outlet to the network with a flexible hose to isolate vibration.",
        "Fit a condensate drain line to an oil-water separator; never drain condensate to a sewer directly.",
        "Check the phase sequence before the first start; the controller will refuse to start with reversed phases.",
    ),
    operation=(
        "Press START; the compressor runs unloaded for a few seconds, then loads.",
        "The controller unloads the compressor when the network reaches the upper pressure and reloads it at the lower pressure.",
        "If the compressor runs unloaded for longer than the idle time, the motor stops and restarts automatically when needed.",
        "Press STOP for a normal stop; the compressor unloads before the motor switches off.",
        "Use the emergency stop only in an emergency; it stops the motor without unloading.",
    ),
    specs=(
        Spec(
            "Free air delivery",
            num(0.8, 9.5, 0.1, "m³/min", 1),
            "How much air does the {name} actually produce per minute?",
        ),
        Spec(
            "Maximum working pressure",
            pick("7.5 bar(g)", "8 bar(g)", "10 bar(g)", "13 bar(g)"),
            "What is the highest pressure the {name} is allowed to run at?",
        ),
        Spec(
            "Oil capacity", num(4, 24, 0.5, "litres of compressor oil", 1), "How much lubricant goes into the {name}?"
        ),
        Spec(
            "Receiver volume",
            pick("270 litres", "500 litres", "720 litres", "900 litres", "none (base-mounted)"),
            "How big is the storage tank that comes with the {name}?",
        ),
        Spec("Sound pressure level", num(60, 75, 1, "dB(A)"), "How noisy is the {name} when it runs?"),
        Spec("Motor rating", num(5.5, 55, 0.5, "kW", 1), "What is the size of the electric drive in the {name}?"),
    ),
    tasks=(
        Task("Replace the air filter element", "How often does the {name}'s intake filter need swapping?", MID),
        Task("Change compressor oil", "When should the lubricant in the {name} be drained and refilled?", LONG),
        Task("Replace the oil separator", "How often is a new separator cartridge needed on the {name}?", LONG),
        Task("Clean the cooler fins", "How regularly should dust be blown out of the {name}'s radiator?", MID),
        Task(
            "Test the safety valve",
            "How often should I check that the {name}'s pressure relief device still opens?",
            LONG,
        ),
        Task("Check the condensate drain", "How frequently should the {name}'s water drain be checked?", SHORT),
    ),
    procedures=(
        Procedure(
            "Replacing the oil separator",
            (
                "Stop the compressor, isolate it and wait until the internal pressure gauge reads zero.",
                "Unscrew the separator cartridge with a strap wrench and discard it as oily waste.",
                "Lightly oil the seal of the new cartridge.",
                "Hand-tighten the new separator cartridge on the {name}, then tighten it to {v}.",
                "Run the compressor and check for leaks.",
            ),
            num(15, 60, 5, "N·m"),
            "What torque is specified for the oil separator cartridge on the {name}?",
            "How tight should the cartridge that strips oil out of the {name}'s air be?",
        ),
        Procedure(
            "Setting the pressure band",
            (
                "Enter the settings menu with the service password.",
                "Select PRESSURE and set the cut-out pressure on the {name} to {v}.",
                "Set the cut-in pressure at least 0.5 bar below the cut-out pressure.",
                "Save and check the values through two load cycles.",
            ),
            pick("6.8 bar(g)", "7.0 bar(g)", "7.2 bar(g)", "7.4 bar(g)", "9.2 bar(g)", "9.5 bar(g)", "12.2 bar(g)"),
            "What cut-out pressure should the pressure switch be set to on the {name}?",
            "At what pressure does the {name} stop pumping air into the network?",
        ),
        Procedure(
            "Adjusting belt tension",
            (
                "Isolate the compressor and remove the belt guard.",
                "Press the belt midway between the pulleys with a force of 50 N.",
                "Deflection of the {name} drive belt at mid-span should be {v}; adjust with the motor tensioning screw.",
                "Refit the belt guard before restoring power.",
            ),
            pick("4 mm", "5 mm", "6 mm", "7 mm", "8 mm", "9 mm", "10 mm"),
            "What belt deflection is correct for the {name}?",
            "How much should the {name}'s drive belt give when pushed in the middle?",
        ),
        Procedure(
            "Draining condensate",
            (
                "Check that the automatic drain cycles when the compressor is loaded.",
                "If there is no automatic drain, open the receiver drain valve of the {name} for {v} at the end of every shift.",
                "Collect the condensate for treatment in an oil-water separator.",
            ),
            num(5, 30, 5, "seconds"),
            "How long should the receiver drain valve be opened on the {name}?",
            "How many seconds do I let water blow out of the {name}'s tank?",
        ),
    ),
    faults=(
        ("Discharge temperature high", "Check the oil level, clean the cooler and check the room ventilation."),
        ("Motor overload tripped", "Check the supply voltage and reset the overload relay."),
        ("Separator differential pressure high", "Replace the oil separator cartridge."),
        ("Phase sequence incorrect", "Swap two supply phases at the main terminals."),
        ("Service interval due", "Carry out the scheduled service and reset the service counter."),
        ("Pressure sensor failure", "Check the sensor wiring and replace the sensor."),
        ("Fan motor fault", "Check the fan motor protection and the fan for obstruction."),
        ("Emergency stop pressed", "Release the button and reset the controller."),
        ("Air filter blocked", "Replace the air filter element."),
        ("Low oil level", "Top up with the specified compressor oil and check for leaks."),
        ("Excessive start frequency", "Increase the pressure band or the receiver volume."),
    ),
)

HVAC = Kind(
    key="hvac",
    noun="packaged rooftop air-conditioning unit",
    models=(
        ("Climavent", "RTU-5", "H"),
        ("Climavent", "RTU-8", "H"),
        ("Climavent", "RTU-12", "H"),
        ("Polarline", "PL-24", "P"),
        ("Polarline", "PL-36", "P"),
        ("Polarline", "PL-48", "P"),
    ),
    intro=(
        "The {name} is a packaged rooftop unit providing cooling, heating and ventilation for commercial buildings.",
        "Scroll compressors, condenser coil, evaporator coil, supply fan and controls are built into one weatherproof cabinet.",
        "A modulating economiser uses outdoor air for free cooling when conditions allow.",
        "Heating is provided by a reverse-cycle heat pump with optional electric back-up heaters.",
        "The unit is controlled by a wall thermostat or a building management system over BACnet.",
    ),
    safety=(
        "The {name} contains refrigerant under pressure; only certified technicians may open the refrigerant circuit.",
        "Disconnect all power supplies, including the heater supply, before opening an access panel.",
        "Fan blades can start without warning under thermostat control.",
        "Work at height on the roof requires fall protection and a permit.",
    ),
    install=(
        "Lift the {name} only by the lifting lugs, using spreader bars to avoid crushing the cabinet.",
        "Set the unit on a roof curb that is level within 5 mm along its length.",
        "Seal the curb to the roof membrane and the duct connections to the unit.",
        "Provide the service clearances shown on the dimension drawing, at least 1.2 m on the control panel side.",
        "Install the condensate drain with a trap and run it to a suitable drain point.",
    ),
    operation=(
        "Set the thermostat to AUTO; the unit selects cooling or heating from the room temperature.",
        "The supply fan runs continuously in occupied hours and cycles with demand in unoccupied hours.",
        "Compressors have a minimum off time of three minutes to protect them from short cycling.",
        "During defrost the outdoor fan stops and the unit switches briefly to cooling mode.",
        "The economiser opens to bring in outdoor air when it is cool and dry enough.",
    ),
    specs=(
        Spec("Nominal cooling capacity", num(14, 140, 1, "kW"), "How much cooling can the {name} deliver?"),
        Spec("Refrigerant charge", num(3.5, 28, 0.5, "kg of R-32", 1), "How much refrigerant gas is in the {name}?"),
        Spec("Supply airflow", num(2400, 24000, 100, "m³/h"), "How much air does the {name} blow into the building?"),
        Spec("Operating weight", num(420, 2600, 10, "kg"), "How heavy is the {name} when it sits on the roof?"),
        Spec(
            "Minimum outdoor temperature (cooling)",
            pick("-5 °C", "-10 °C", "-15 °C", "-18 °C", "-20 °C"),
            "How cold can it be outside while the {name} still cools?",
        ),
        Spec(
            "Power supply",
            pick("400 V / 3 ph / 50 Hz", "230 V / 1 ph / 50 Hz", "460 V / 3 ph / 60 Hz"),
            "What electrical supply does the {name} need?",
        ),
    ),
    tasks=(
        Task("Replace air filters", "How often do the {name}'s dust filters need changing?", MID),
        Task(
            "Clean the condenser coil", "How regularly should the outdoor heat exchanger on the {name} be washed?", MID
        ),
        Task("Check refrigerant pressures", "How often should the {name}'s gas pressures be gauged?", LONG),
        Task("Clear the condensate drain", "How frequently should the {name}'s drip tray outlet be unblocked?", SHORT),
        Task("Lubricate fan motor bearings", "When do the {name}'s blower motor bearings need grease?", LONG),
        Task(
            "Check economiser damper operation",
            "How often should I test that the {name}'s fresh-air flap moves freely?",
            MID,
        ),
    ),
    procedures=(
        Procedure(
            "Changing the filters",
            (
                "Switch the unit off at the thermostat and open the filter access door.",
                "Slide out the old filters and note the airflow arrow.",
                "Fit replacement filters of size {v}, grade ePM1 60%, airflow arrow towards the fan.",
                "Close the access door and reset the dirty filter alarm on the {name} controller.",
            ),
            pick(
                "495 x 495 x 48 mm",
                "592 x 592 x 48 mm",
                "592 x 490 x 96 mm",
                "400 x 625 x 48 mm",
                "500 x 625 x 96 mm",
                "287 x 592 x 48 mm",
            ),
            "What filter size does the {name} use?",
            "What dimensions of air cleaning panels do I need to buy for the {name}?",
        ),
        Procedure(
            "Setting the economiser changeover",
            (
                "Open the controller service menu and select ECONOMISER.",
                "Set the {name} economiser changeover to {v} outdoor air temperature.",
                "Set the minimum outdoor air position required by the ventilation design.",
                "Observe the damper through one full changeover to confirm operation.",
            ),
            pick("14 °C", "15 °C", "16 °C", "17 °C", "18 °C", "19 °C", "20 °C", "21 °C"),
            "What is the economiser changeover setpoint on the {name}?",
            "At what outside temperature does the {name} start using fresh air for free cooling?",
        ),
        Procedure(
            "Condensate trap",
            (
                "The drain pan is under negative pressure when the fan runs; a trap is required.",
                "The condensate trap on the {name} must have a water seal depth of at least {v}.",
                "Prime the trap with water before starting the unit and after each winter shutdown.",
            ),
            pick("38 mm", "50 mm", "64 mm", "75 mm", "90 mm", "100 mm"),
            "What water seal depth does the condensate trap on the {name} need?",
            "How deep should the water in the U-bend under the {name}'s drip tray be?",
        ),
        Procedure(
            "Replacing the supply fan belt",
            (
                "Isolate the unit and remove the fan access panel.",
                "Slacken the motor base and remove the old belt.",
                "Fit the new belt, part number {v}, and tension it until it deflects 10 mm under thumb pressure.",
                "Check pulley alignment with a straight edge and refit the panel.",
            ),
            lambda rng: f"{rng.choice(['SPZ', 'SPA', 'XPZ', 'XPA'])}-{rng.randrange(900, 1800, 12)}",
            "Which fan belt part number fits the {name}?",
            "What replacement drive band do I order for the {name}'s blower?",
        ),
    ),
    faults=(
        ("High pressure lockout", "Clean the condenser coil and check the condenser fans."),
        ("Low pressure lockout", "Check for a refrigerant leak and for a blocked filter drier."),
        ("Supply air sensor fault", "Check the sensor wiring; replace the sensor if its resistance is out of range."),
        ("Compressor overload", "Check the supply voltage and the compressor current."),
        ("Condensate overflow", "Clear the drain and the trap."),
        ("Dirty filter alarm", "Replace the air filters and reset the alarm."),
        ("Fire alarm shutdown", "Reset the fire alarm panel; the unit restarts automatically."),
        ("Thermostat communication lost", "Check the thermostat cable and its termination."),
        ("Freeze protection", "Check the airflow and the evaporator for ice."),
        ("Smoke detected in return air", "Investigate the source of smoke before resetting."),
        ("Heater overtemperature", "Check the airflow across the electric heaters."),
    ),
)

RADIO = Kind(
    key="radio",
    noun="two-way radio",
    models=(
        ("Fieldcom", "FR-2", "ERR "),
        ("Fieldcom", "FR-5", "ERR "),
        ("Fieldcom", "FM-40", "ERR "),
        ("Tallis", "T-300", "T"),
        ("Tallis", "T-500", "T"),
        ("Tallis", "T-800", "T"),
    ),
    intro=(
        "The {name} is a digital two-way radio for field crews, supporting DMR Tier II and analogue FM channels.",
        "It offers a loud, clear speaker, a rugged housing and a large battery for a full shift.",
        "Lone-worker and man-down functions raise an alarm when the user stops moving or does not respond.",
        "GPS location is sent to the dispatcher with every emergency call.",
        "Channels, contacts and scan lists are loaded with the programming software over USB.",
    ),
    safety=(
        "Do not transmit near blasting caps or in an explosive atmosphere unless the {name} is certified for it.",
        "Keep the antenna at least 2.5 cm from your face and body while transmitting.",
        "Use only {brand} approved batteries, chargers and antennas.",
        "Do not charge the battery in a hazardous area.",
    ),
    install=(
        "Charge a new battery for at least eight hours before first use.",
        "Attach the antenna by turning it clockwise until finger tight; do not use tools.",
        "Clip the battery into the back of the {name} until the latch clicks.",
        "For vehicle installation, mount the radio away from airbag deployment zones and route the antenna cable clear of sharp edges.",
    ),
    operation=(
        "Turn the volume knob clockwise to switch on; the {name} announces the selected channel.",
        "Press and hold the push-to-talk button, wait for the tone, and speak 5 cm from the microphone.",
        "Release push-to-talk to listen; the LED is green while receiving.",
        "Use the channel selector to change channels; the zone button switches between channel groups.",
        "A long press on Side Key 1 toggles scan mode.",
    ),
    specs=(
        Spec(
            "Transmit power",
            pick("1 W", "2 W", "4 W", "5 W", "25 W", "45 W"),
            "How strong is the {name}'s signal output?",
        ),
        Spec(
            "Frequency range",
            pick("136–174 MHz", "403–470 MHz", "400–527 MHz", "350–400 MHz", "806–870 MHz"),
            "Which radio frequencies can the {name} operate on?",
        ),
        Spec("Battery capacity", num(1500, 3200, 100, "mAh"), "How big is the {name}'s battery pack?"),
        Spec(
            "Channels",
            pick("16 channels", "32 channels", "64 channels", "256 channels", "1,000 channels", "1,024 channels"),
            "How many talk groups can be stored in the {name}?",
        ),
        Spec("Ingress protection", pick("IP54", "IP55", "IP66", "IP67", "IP68"), "How waterproof is the {name}?"),
        Spec(
            "Battery life (5/5/90 duty cycle)",
            num(10, 24, 1, "hours"),
            "How long does the {name} last on one charge in a typical shift?",
        ),
    ),
    tasks=(
        Task(
            "Inspect antenna and connector",
            "How often should the {name}'s aerial and its socket be looked over?",
            R_SHORT,
        ),
        Task("Clean battery contacts", "How regularly should the {name}'s battery terminals be wiped?", R_MID),
        Task("Check transmit power and audio", "How often should the {name}'s output and sound be tested?", R_MID),
        Task("Replace the battery pack", "When does the {name} need a new battery?", R_LONG),
        Task("Update firmware", "How often should the {name}'s software be upgraded?", R_LONG),
        Task("Test the emergency button", "How often should I check that the {name}'s panic alarm works?", R_SHORT),
    ),
    procedures=(
        Procedure(
            "Programming mode",
            (
                "Connect the {name} to the PC with the programming cable and start the programming software.",
                "Read the radio before making changes and save a backup of the codeplug.",
                "When asked, enter the default programming password for the {name}, which is {v}; change it at once.",
                "Write the new codeplug and test each channel.",
            ),
            lambda rng: f"{rng.randrange(10**5, 10**6)}",
            "What is the default programming password on the {name}?",
            "What code unlocks the settings of a brand-new {name} on the PC?",
        ),
        Procedure(
            "Battery conditioning",
            (
                "Nickel-metal hydride and lithium-ion packs lose capacity if they are only ever topped up.",
                "Condition the {name} battery every {v} in the conditioning charger.",
                "A pack that holds less than 80 percent of its rated capacity after conditioning must be replaced.",
            ),
            num(20, 60, 5, "charge cycles"),
            "How often should the {name} battery be conditioned?",
            "After how many top-ups should the {name}'s pack get a full discharge and recharge?",
        ),
        Procedure(
            "Sending an emergency alert",
            (
                "Hold the orange emergency button on the {name} for {v} to send an alert.",
                "The radio sends its GPS position and opens the microphone for hot-mic transmission.",
                "To cancel, hold the emergency button again until the tone stops.",
            ),
            pick("1 second", "2 seconds", "3 seconds", "4 seconds", "5 seconds"),
            "How long must the emergency button be held on the {name} to send an alert?",
            "How long do I press the panic key on the {name} to call for help?",
        ),
        Procedure(
            "Factory reset",
            (
                "A factory reset erases all channels, contacts and settings.",
                "Switch the {name} off.",
                "Press and hold {v} while switching the radio on, until the LED flashes red.",
                "Reprogram the radio from the saved codeplug.",
            ),
            pick(
                "Side Key 1 and the PTT button",
                "Side Key 2 and the PTT button",
                "the Menu key and the PTT button",
                "Side Key 1 and Side Key 2",
                "the Emergency key and Side Key 2",
            ),
            "How do you perform a factory reset on the {name}?",
            "Which buttons wipe the {name} back to how it came out of the box?",
        ),
    ),
    faults=(
        ("Low battery", "Charge or replace the battery."),
        ("Transmit inhibited", "The channel is receive-only or the radio is too hot; change channel or let it cool."),
        ("Out of range", "Move towards the repeater or select talk-around."),
        ("Synthesiser unlock", "Switch off and on; return the radio for repair if it persists."),
        ("Over-temperature", "Stop transmitting until the radio cools down."),
        ("Invalid codeplug", "Reprogram the radio with a codeplug for this model."),
        ("GPS not fixed", "Move to open sky and wait up to two minutes."),
        ("Antenna mismatch", "Check the antenna and connector for damage."),
        ("Firmware mismatch", "Update the firmware to the version required by the codeplug."),
        ("Memory error", "Reset to factory defaults and reprogram."),
        ("Battery not recognised", "Use an approved battery and clean the contacts."),
    ),
)

KINDS = (PUMP, GENERATOR, COMPRESSOR, HVAC, RADIO)


def _fill(text: str, **slots: str) -> str:
    return text.format(**slots)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _date(rng: random.Random, first_year: int = 2019, last_year: int = 2024) -> str:
    months = (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    )
    return f"{rng.randint(1, 28)} {rng.choice(months)} {rng.randint(first_year, last_year)}"


FAULT_QUESTIONS = (
    "The {name} is showing {code} on its display. What is wrong with it?",
    "What is the {name} telling me when it flashes {code}?",
    "My {name} stopped and shows {code}; what problem does that point to?",
)


@dataclass
class Manual:
    """A generated manual with the values that later documents (bulletins, reports) refer to."""

    doc: Doc
    kind: Kind
    brand: str
    model: str
    procedure_facts: dict[str, Fact]


def manual(kind: Kind, brand: str, model: str, prefix: str, rng: random.Random, fmt: str) -> Manual:
    """An operation and maintenance manual: specs, schedule, procedures, fault codes, warranty."""
    slots = {"name": model, "brand": brand}
    full = f"{brand} {model}"
    facts: list[Fact] = []
    sections: list[Section] = []

    about = [_fill(s, **slots) for s in rng.sample(COMMON_ABOUT, 5)]
    sections.append(Section("1. About this manual", [Para(" ".join(about[:3])), Para(" ".join(about[3:]))]))
    safety = [_fill(s, **slots) for s in (*rng.sample(COMMON_SAFETY, 5), *kind.safety)]
    sections.append(
        Section("2. Safety", [Para(f"Observe these instructions when working on the {full}."), Bullets(tuple(safety))])
    )
    sections.append(Section("3. Description", [Para(" ".join(_fill(s, **slots) for s in kind.intro))]))

    rows = []
    for spec in kind.specs:
        value = spec.value(rng)
        rows.append((spec.label, value))
        facts.append(Fact(value, f"What is the {spec.label.lower()} of the {full}?", _fill(spec.para, **slots)))
    sections.append(
        Section("4. Technical data", [Table(f"Table 1 – {model} technical data", ("Parameter", "Value"), tuple(rows))])
    )

    install = [_fill(s, **slots) for s in kind.install]
    half = len(install) // 2
    sections.append(Section("5. Installation", [Para(" ".join(install[:half])), Para(" ".join(install[half:]))]))
    operation = [_fill(s, **slots) for s in kind.operation]
    sections.append(Section("6. Operation", [Para(operation[0]), Bullets(tuple(operation[1:]), ordered=True)]))

    used: list[str] = []
    for task in kind.tasks:
        used.append(rng.choice([i for i in task.every if i not in used]))
    schedule = tuple((task.task, interval) for task, interval in zip(kind.tasks, used, strict=True))
    for task, interval in zip(kind.tasks, used, strict=True):
        facts.append(
            Fact(interval, f"How often should you {_lower_first(task.task)} on the {full}?", _fill(task.para, **slots))
        )
    sections.append(
        Section(
            "7. Maintenance schedule",
            [
                Para(
                    f"Carry out the following maintenance on the {model} at the interval shown or at the hours shown, whichever comes first. Record every task in the maintenance log."
                ),
                Table(f"Table 2 – {model} maintenance schedule", ("Task", "Interval"), schedule),
            ],
        )
    )

    procedure_facts: dict[str, Fact] = {}
    procedures = Section(
        "8. Service procedures",
        [
            Para(
                f"The procedures below are specific to the {full}. Follow the safety instructions in section 2 throughout."
            )
        ],
    )
    sections.append(procedures)
    for number, proc in enumerate(rng.sample(kind.procedures, len(kind.procedures)), 1):
        value = proc.value(rng)
        steps = tuple(_fill(step, v=value, **slots) for step in proc.steps)
        sections.append(Section(f"8.{number} {proc.title}", [Bullets(steps, ordered=True)], level=3))
        fact = Fact(
            value, _fill(proc.keyword, **slots).replace(f"the {model}", f"the {full}", 1), _fill(proc.para, **slots)
        )
        facts.append(fact)
        procedure_facts[proc.title] = fact

    codes = sorted(rng.sample(range(1, 40), 8))
    fault_rows = []
    for code, (meaning, action) in zip(codes, rng.sample(kind.faults, 8), strict=True):
        label = f"{prefix}{code:02d}"
        fault_rows.append((label, meaning, action))
        facts.append(
            Fact(
                meaning,
                f"What does fault code {label} mean on the {full}?",
                rng.choice(FAULT_QUESTIONS).format(name=model, code=label),
            )
        )
    sections.append(
        Section(
            "9. Fault codes",
            [
                Para(
                    f"When the {model} detects a fault it stops or raises a warning and shows a code on the display. Correct the cause before resetting."
                ),
                Table(f"Table 3 – {model} fault codes", ("Code", "Fault", "Action"), tuple(fault_rows)),
            ],
        )
    )

    months = rng.choice((12, 18, 24, 30, 36, 60))
    warranty = f"{months} months from the date of commissioning"
    sections.append(
        Section(
            "10. Warranty and support",
            [
                Para(
                    f"The {full} is covered by a warranty of {warranty} or {months + 6} months from delivery, whichever ends first. "
                    + " ".join(_fill(s, **slots) for s in WARRANTY)
                ),
            ],
        )
    )
    facts.append(
        Fact(
            warranty,
            f"How long is the warranty on the {full}?",
            f"For how long after it is started up will {brand} repair a faulty {model} free of charge?",
        )
    )
    meta = [
        ("Document", f"{brand[:3].upper()}-{model}-OM"),
        ("Revision", f"{rng.choice('BCDEF')}"),
        ("Issued", _date(rng)),
        ("Applies to", f"{full} {kind.noun}"),
    ]
    doc = Doc(
        f"manuals/{kind.key}/{brand.lower()}-{model.lower()}-manual",
        f"{full} {kind.noun}: operation and maintenance manual",
        meta,
        sections,
        fmt,
        facts,
        entity=model,
    )
    return Manual(doc, kind, brand, model, procedure_facts)


BULLETIN_PARTS = {
    "pump": ("mechanical seal kit", "shaft seal repair set"),
    "generator": ("fuel filter element", "diesel filter cartridge"),
    "compressor": ("inlet valve repair kit", "intake valve rebuild set"),
    "hvac": ("condenser fan motor", "outdoor fan drive"),
    "radio": ("battery latch assembly", "battery clip"),
}


def bulletin(m: Manual, number: str, revise: bool, rng: random.Random) -> Doc:
    """A service bulletin that revises one manual value (the manual's fact becomes unusable)
    or supersedes a part number."""
    full = f"{m.brand} {m.model}"
    slots = {"name": m.model, "brand": m.brand}
    sections: list[Section] = []
    facts: list[Fact] = []
    if revise:
        proc = rng.choice(m.kind.procedures)
        old = m.procedure_facts[proc.title]
        new = proc.value(rng)
        while new == old.answer:
            new = proc.value(rng)
        old.usable = False
        step = next(s for s in proc.steps if "{v}" in s)
        title = f"{m.model}: revised value in '{proc.title}'"
        sections.append(
            Section(
                "Reason",
                [
                    Para(
                        f"Field experience with the {full} has shown that the value given in the operation manual for '{proc.title.lower()}' can lead to premature wear. Engineering has reviewed the design margin and issues a corrected value."
                    )
                ],
            )
        )
        sections.append(
            Section(
                "Change",
                [
                    Para(f"The manual value of {old.answer} is withdrawn and must not be used."),
                    Para("New instruction: " + _fill(step, v=new, **slots)),
                ],
            )
        )
        facts.append(
            Fact(
                new,
                "According to the service bulletin, " + _lower_first(_fill(proc.keyword, **slots)),
                "Since the manufacturer's correction, " + _lower_first(_fill(proc.para, **slots)),
            )
        )
    else:
        part, para_part = BULLETIN_PARTS[m.kind.key]
        old_pn = f"{rng.randint(10, 89)}-{rng.randint(1000, 9999)}"
        new_pn = f"{rng.randint(10, 89)}-{rng.randint(1000, 9999)}"
        serial = f"{m.model.replace('-', '')}{rng.randint(10000, 99999)}"
        title = f"{m.model}: {part} superseded"
        sections.append(
            Section(
                "Reason",
                [
                    Para(
                        f"The supplier of the {part} fitted to the {full} has changed the material specification. The new part is fully interchangeable and has a longer service life."
                    )
                ],
            )
        )
        sections.append(
            Section(
                "Change",
                [
                    Para(
                        f"Part number {new_pn} replaces part number {old_pn} for all {m.model} units from serial number {serial}. Existing stock of {old_pn} may be used until exhausted on earlier units only."
                    )
                ],
            )
        )
        facts.append(
            Fact(
                new_pn,
                f"Which part number replaces the {part} for the {full}?",
                f"What is the new order code for the {m.model}'s {para_part}?",
            )
        )
    sections.append(
        Section(
            "Action required",
            [
                Bullets(
                    (
                        f"Apply this bulletin at the next scheduled service of every {m.model} in your care.",
                        "Record the bulletin number in the unit's maintenance log.",
                        "Return replaced parts only if a warranty claim is made.",
                    )
                )
            ],
        )
    )
    sections.append(
        Section(
            "Labour",
            [
                Para(
                    f"Allow {rng.randint(1, 4)}.{rng.choice('05')} hours per unit. Warranty labour is reimbursed at the standard rate for units still under warranty."
                )
            ],
        )
    )
    meta = [
        ("Bulletin", number),
        ("Date", _date(rng, 2022, 2025)),
        ("Applies to", full),
        ("Priority", rng.choice(("Routine", "Recommended", "Mandatory"))),
    ]
    return Doc(
        f"bulletins/{number.lower()}",
        f"Service bulletin {number} – {title}",
        meta,
        sections,
        "txt",
        facts,
        entity=m.model,
    )


FINDINGS = {
    "pump": (
        "a worn coupling insert with cracked rubber elements",
        "a blocked suction strainer packed with debris",
        "seal faces scored by abrasive particles",
        "an impeller eye partly blocked by rags",
        "a motor bearing running dry",
        "an air lock in the suction pipe",
    ),
    "generator": (
        "a split coolant hose at the radiator inlet",
        "water in the fuel filter bowl",
        "a blown battery charger fuse",
        "a slipping fan belt",
        "a sticking fuel shut-off solenoid",
        "a loose sensing lead on the voltage regulator",
    ),
    "compressor": (
        "a seized minimum pressure valve",
        "cooler fins clogged with dust",
        "a failed condensate drain solenoid",
        "a leaking oil return line",
        "a burnt contactor in the star-delta starter",
        "a cracked intake hose",
    ),
    "hvac": (
        "a refrigerant leak at an evaporator return bend",
        "a blocked condensate trap",
        "a snapped supply fan belt",
        "a faulty supply air sensor",
        "a failed condenser fan capacitor",
        "an economiser actuator stuck closed",
    ),
    "radio": (
        "a corroded battery contact",
        "a damaged antenna connector",
        "an outdated codeplug after a network change",
        "a cracked push-to-talk membrane",
        "water behind the speaker grille",
        "a battery pack below 60 percent of rated capacity",
    ),
}

SITES = (
    "Riverside Water Treatment Works",
    "Eastgate General Hospital",
    "Port Kell Cold Store",
    "Highmoor Data Centre",
    "Saltcote Distribution Centre",
    "Brackenfield Leisure Centre",
    "Ashby Road Depot",
    "Millbrook Primary School",
    "Cranford Business Park",
    "Lockwood Brewery",
    "Tern Valley Pumping Station",
    "Wyndham Street Offices",
    "Fenwick Retail Park",
    "Old Quay Ferry Terminal",
    "Hartside Quarry",
    "Glenmoor Care Home",
)
TECHNICIANS = ("A. Okafor", "B. Lindqvist", "C. Murray", "D. Patel", "E. Novak", "F. Byrne", "G. Haddad", "H. Sato")


def visit_report(m: Manual, site: str, rng: random.Random, fmt: str) -> Doc:
    """A field-service visit report: the finding is the fact; findings repeat across sites."""
    finding = rng.choice(FINDINGS[m.kind.key])
    date = _date(rng, 2023, 2025)
    code_table = next(
        b for s in m.doc.sections for b in s.blocks if isinstance(b, Table) and "fault codes" in b.caption
    )
    code, meaning, action = rng.choice(code_table.rows)
    hours = rng.randint(800, 42000)
    sections = [
        Section(
            "Reason for visit",
            [
                Para(
                    f"Call logged by the site: the {m.model} had stopped and was displaying {code} ({meaning.lower()}). Priority 2 response."
                )
            ],
        ),
        Section(
            "Findings",
            [
                Para(
                    f"On arrival the unit was isolated and inspected. The engineer found {finding}. The hour meter read {hours:,} hours. The recommended action for the displayed code is: {_lower_first(action)}"
                )
            ],
        ),
        Section(
            "Work carried out",
            [
                Bullets(
                    (
                        "Isolated and locked off the unit.",
                        "Rectified the fault and replaced the affected parts.",
                        "Tested the unit through a full operating cycle.",
                        "Cleared the fault log and returned the unit to service.",
                    )
                )
            ],
        ),
        Section(
            "Recommendations",
            [
                Para(
                    rng.choice(
                        (
                            f"Bring the next scheduled service of the {m.model} forward by one month.",
                            "No further action required; monitor at the next planned visit.",
                            f"Quote the customer for replacing the {m.model}, which is near the end of its economic life.",
                            "Ask the site to keep the plant room clear of stored materials.",
                        )
                    )
                )
            ],
        ),
    ]
    meta = [
        ("Site", site),
        ("Equipment", f"{m.brand} {m.model}"),
        ("Visit date", date),
        ("Engineer", rng.choice(TECHNICIANS)),
    ]
    fact = Fact(
        finding,
        f"What did the engineer find on the {m.model} at {site}?",
        f"Why had the {m.model} at {site} broken down, according to the engineer who visited?",
    )
    slug = re.sub(r"[^a-z0-9]+", "-", site.lower()).strip("-")
    return Doc(
        f"reports/visit-{slug}-{m.model.lower()}",
        f"Field service visit report – {site}",
        meta,
        sections,
        fmt,
        [fact],
        entity=site,
    )


def quick_reference(m: Manual, fmt: str) -> Doc:
    """A one-page card: same vocabulary as the manual, none of its facts."""
    slots = {"name": m.model, "brand": m.brand}
    sections = [
        Section("Before you start", [Bullets(tuple(_fill(s, **slots) for s in m.kind.safety))]),
        Section("Start and stop", [Bullets(tuple(_fill(s, **slots) for s in m.kind.operation), ordered=True)]),
        Section(
            "Need help?",
            [
                Para(
                    f"Full procedures, technical data, the maintenance schedule and fault codes are in the {m.brand} {m.model} operation and maintenance manual. Call the service desk with the serial number ready."
                )
            ],
        ),
    ]
    return Doc(
        f"manuals/{m.kind.key}/{m.brand.lower()}-{m.model.lower()}-quick-reference",
        f"{m.brand} {m.model} quick reference card",
        [],
        sections,
        fmt,
    )


def site_register(site: str, manuals: Sequence[Manual], rng: random.Random) -> Doc:
    """An asset register: model names and dates in a table, no facts asked."""
    rows = []
    for m in rng.sample(list(manuals), 7):
        rows.append(
            (
                f"{m.brand} {m.model}",
                f"{m.model.replace('-', '')}{rng.randint(10000, 99999)}",
                rng.choice(("Plant room", "Roof", "Basement", "Yard", "Control room", "Workshop")),
                _date(rng, 2012, 2023),
            )
        )
    sections = [
        Section(
            "Scope",
            [
                Para(
                    f"Equipment at {site} maintained by Meridian Field Services under contract. Update this register after every installation, removal or replacement."
                )
            ],
        ),
        Section(
            "Assets", [Table(f"Assets at {site}", ("Equipment", "Serial number", "Location", "Installed"), tuple(rows))]
        ),
    ]
    slug = re.sub(r"[^a-z0-9]+", "-", site.lower()).strip("-")
    return Doc(
        f"sites/{slug}-asset-register", f"Asset register – {site}", [("Owner", "Contracts team")], sections, "md"
    )


TOOLBOX = {
    "Working at height": (
        "Plan every job at height: can it be done from the ground instead?",
        "Inspect ladders before use and set them at the correct angle, tied or footed.",
        "Use a harness and a lanyard attached to a rated anchor point on roofs without edge protection.",
        "Never work at height alone or in high wind.",
        "Keep tools tethered so that nothing can fall on people below.",
    ),
    "Manual handling": (
        "Assess the load before lifting: weight, shape, grip, route.",
        "Use trolleys, hoists and team lifts for heavy or awkward items.",
        "Keep the load close to the waist and avoid twisting.",
        "Motors and pump casings are often heavier than they look; check the weight on the rating plate.",
    ),
    "Lockout and tagout": (
        "Identify every energy source: electrical, hydraulic, pneumatic, stored pressure, gravity.",
        "Isolate, lock and tag each source with your own padlock.",
        "Prove dead before touching: test the tester, test the circuit, test the tester again.",
        "Only the person who applied a lock may remove it.",
    ),
    "Heat stress": (
        "Plant rooms and roofs can be far hotter than the weather suggests.",
        "Drink water regularly and take breaks in the shade.",
        "Know the signs of heat exhaustion: headache, dizziness, nausea, heavy sweating.",
        "Stop work and cool down if you feel unwell, and tell your supervisor.",
    ),
    "Confined spaces": (
        "Tanks, pits, ducts and sumps can be confined spaces.",
        "Never enter without a permit, a gas test and a rescue plan.",
        "A standby person must remain outside and in contact at all times.",
        "Oxygen can be displaced without any smell or warning.",
    ),
    "Refrigerant handling": (
        "Only certified technicians may recover or charge refrigerant.",
        "Wear gloves and eye protection: liquid refrigerant causes frostbite.",
        "Never vent refrigerant to the atmosphere; recover it into a labelled cylinder.",
        "Record every quantity added or recovered in the equipment log.",
    ),
}


def toolbox_talk(topic: str, lines: tuple[str, ...], rng: random.Random) -> Doc:
    sections = [
        Section(
            "Why this matters",
            [
                Para(
                    f"This toolbox talk takes about ten minutes. Deliver it at the start of a shift and record who attended. Topic: {topic.lower()}."
                )
            ],
        ),
        Section("Key points", [Bullets(lines)]),
        Section(
            "Discussion",
            [
                Para(
                    "Ask the team for a recent example from their own sites. What went well? What nearly went wrong? Agree one action to take away."
                )
            ],
        ),
    ]
    slug = topic.lower().replace(" ", "-")
    return Doc(
        f"safety/toolbox-talk-{slug}",
        f"Toolbox talk: {topic}",
        [("Issued by", "Health and Safety"), ("Date", _date(rng, 2023, 2025))],
        sections,
        "md",
    )


# ---------------------------------------------------------------------------
# Contracts
# ---------------------------------------------------------------------------

US = "Meridian Field Services Ltd"
COUNTERPARTIES = (
    "Northwind",
    "Kestrel",
    "Bramble",
    "Halcyon",
    "Ironbridge",
    "Larkspur",
    "Ashdown",
    "Corbel",
    "Falconer",
    "Greystone",
    "Harrowgate",
    "Juniper",
    "Kingsmere",
    "Lowther",
    "Marlow",
    "Netherby",
    "Oakhurst",
    "Pembrook",
    "Redfern",
    "Saltmarsh",
    "Thornbury",
    "Westcott",
    "Yarrow",
    "Zephyr",
    "Alderney",
    "Beacon",
    "Cinderford",
    "Dovecote",
    "Elmstead",
    "Foxley",
    "Glenholm",
    "Hawthorne",
    "Inchcape",
    "Jessop",
    "Kelvedon",
    "Linnet",
    "Moorcroft",
    "Penhallow",
    "Quenby",
    "Rowanfield",
)
SECTORS = (
    "Logistics Ltd",
    "Water plc",
    "Property Holdings Ltd",
    "Foods Ltd",
    "Healthcare Trust",
    "Engineering Ltd",
    "Retail Group plc",
    "Data Centres Ltd",
    "Leisure Ltd",
    "Utilities plc",
    "Facilities Management Ltd",
)
LAWS = (
    ("the laws of England and Wales", "courts of England and Wales"),
    ("the laws of Scotland", "Scottish courts"),
    ("the laws of Northern Ireland", "courts of Northern Ireland"),
    ("the laws of Ireland", "courts of Dublin"),
    ("the laws of the State of New York", "state and federal courts in New York County"),
    ("the laws of the Netherlands", "competent court in Amsterdam"),
)
LAW_PARAPHRASE = (
    "If {short} and Meridian end up in a legal dispute, whose legal system applies?",
    "Which country's rules would a judge use to read the contract between Meridian and {short}?",
)


def _party(short: str, rng: random.Random) -> str:
    return f"{short} {rng.choice(SECTORS)}"


def _clauses(title: str, items: Sequence[str]) -> Section:
    """A numbered clause: long clauses become paragraphs, as contracts are written."""
    return Section(title, [Para(item) for item in items])


BOILERPLATE = (
    "Headings are for convenience only and do not affect interpretation.",
    "A reference to a statute is a reference to it as amended or re-enacted from time to time.",
    "Words in the singular include the plural and vice versa.",
    "A person includes a natural person, a corporate or unincorporated body.",
    "Writing or written includes e-mail unless this Agreement says otherwise.",
    "Including means including without limitation.",
)

GENERAL = (
    "Neither party may assign or subcontract its rights or obligations without the prior written consent of the other, which shall not be unreasonably withheld.",
    "This Agreement constitutes the entire agreement between the parties and supersedes all previous discussions, correspondence and understandings.",
    "No variation of this Agreement is effective unless it is in writing and signed by both parties.",
    "If any provision is found invalid or unenforceable, the remaining provisions continue in full force.",
    "A failure or delay in exercising a right does not waive that right.",
    "Notices shall be delivered by hand or by recorded delivery to the registered office of the recipient.",
    "Nothing in this Agreement creates a partnership or agency between the parties.",
)


def service_agreement(short: str, rng: random.Random, fmt: str, sites: Sequence[str]) -> Doc:
    """Meridian maintains the customer's plant: response times, payment, termination, liability, law."""
    party = _party(short, rng)
    hours = rng.choice((2, 4, 6, 8, 12, 24))
    pay = rng.choice((14, 21, 28, 30, 45, 60, 90))
    interest = rng.choice(("2", "3", "4", "5", "8"))
    notice = rng.choice((30, 60, 90, 120, 180))
    cure = rng.choice((10, 14, 20, 30, 45))
    term = rng.choice((12, 24, 36, 48, 60))
    cap = rng.choice(
        (
            "100 percent of the Charges paid in the 12 months before the claim",
            "125 percent of the annual Charges",
            "150 percent of the Charges paid in the preceding year",
            "200 percent of the annual Charges",
            "GBP 250,000 in aggregate",
            "GBP 1,000,000 in aggregate",
            "GBP 2,500,000 in aggregate",
        )
    )
    insurance = rng.choice(("GBP 2 million", "GBP 5 million", "GBP 10 million", "GBP 15 million"))
    law, courts = rng.choice(LAWS)
    visits = rng.choice(("two", "three", "four", "six", "twelve"))
    own_sites = rng.sample(list(sites), 2)
    notice_text = f"{notice} days' written notice"
    sections = [
        _clauses(
            "1. Parties",
            [
                f'This Agreement is made between {US} ("Meridian") and {party} ("{short}"), each a party and together the parties.'
            ],
        ),
        _clauses("2. Interpretation", list(rng.sample(BOILERPLATE, 4))),
        _clauses(
            "3. Services",
            [
                f"Meridian shall provide planned preventive maintenance and reactive repair of the mechanical and electrical plant listed in Schedule 1 at {short}'s sites, including {own_sites[0]} and {own_sites[1]}.",
                f"Planned maintenance visits take place {visits} times per year at each site, on dates agreed at least ten Business Days in advance.",
                "Meridian shall use suitably qualified engineers, comply with site rules, and keep a maintenance log for each asset.",
            ],
        ),
        _clauses(
            "4. Service levels",
            [
                f"Meridian shall attend a Priority 1 fault at {short}'s sites within {hours} hours of the call being logged. A Priority 1 fault is a failure that stops a critical service or creates a safety risk.",
                "Priority 2 faults are attended by the end of the next Business Day; Priority 3 faults at the next planned visit.",
                "If Meridian misses a service level in three consecutive months, the Charges for that month are reduced by service credits as set out in Schedule 3, which are the sole financial remedy for the failure.",
            ],
        ),
        _clauses(
            "5. Charges and payment",
            [
                "Meridian shall invoice the Charges monthly in arrears.",
                f"{short} shall pay each undisputed invoice within {pay} days of receipt.",
                f"Interest on late payments accrues at {interest} percent per annum above the Bank of England base rate from the due date until payment.",
                "The Charges are reviewed annually on the anniversary of the Commencement Date by no more than the change in the Consumer Prices Index.",
            ],
        ),
        _clauses(
            "6. Term and termination",
            [
                f"This Agreement starts on the Commencement Date and continues for an initial term of {term} months, then from year to year until terminated.",
                f"Either Meridian or {short} may terminate this Agreement for convenience by giving the other at least {notice_text}.",
                f"Either Meridian or {short} may terminate immediately if the other commits a material breach which, if remediable, it fails to remedy within {cure} days after written notice of the breach.",
                "On termination Meridian shall return all keys, access cards and documents belonging to the customer.",
            ],
        ),
        _clauses(
            "7. Limitation of liability",
            [
                "Nothing in this Agreement limits liability for death or personal injury caused by negligence, or for fraud.",
                f"Subject to that, each party's total aggregate liability under or in connection with this Agreement shall not exceed {cap}.",
                "Neither party is liable for loss of profit, loss of business, or any indirect or consequential loss.",
            ],
        ),
        _clauses(
            "8. Insurance",
            [
                f"Throughout its work for {short}, Meridian shall maintain public liability insurance with cover of not less than {insurance} for any one occurrence, and employer's liability insurance as required by law, and shall produce the certificates on request.",
            ],
        ),
        _clauses(
            "9. Confidentiality",
            [
                "Each party shall keep confidential all information of the other that it receives under this Agreement and use it only to perform this Agreement.",
                "This clause survives termination of this Agreement.",
            ],
        ),
        _clauses("10. General", list(rng.sample(GENERAL, 4))),
        _clauses(
            "11. Governing law and jurisdiction",
            [
                f"This Agreement and any dispute arising from it are governed by {law}, and the parties submit to the exclusive jurisdiction of the {courts}.",
            ],
        ),
    ]
    facts = [
        Fact(
            f"within {hours} hours of the call being logged",
            f"What is the Priority 1 response time in the {short} service agreement?",
            f"How quickly do Meridian's engineers have to turn up when something critical breaks at {short}?",
        ),
        Fact(
            f"within {pay} days of receipt",
            f"Within how many days must {short} pay invoices under the service agreement?",
            f"How long does {short} have to settle Meridian's bills?",
        ),
        Fact(
            f"{interest} percent per annum above the Bank of England base rate",
            f"What interest rate applies to late payments under the {short} service agreement?",
            f"What extra charge does {short} face if it pays Meridian late?",
        ),
        Fact(
            notice_text,
            f"How much notice is needed to terminate the {short} service agreement for convenience?",
            f"How far in advance must Meridian or {short} warn the other before walking away from their maintenance contract without cause?",
        ),
        Fact(
            f"within {cure} days after written notice of the breach",
            f"What is the cure period for a material breach in the {short} service agreement?",
            f"How long does a party get to put things right after {short} or Meridian complains that the deal was broken?",
        ),
        Fact(
            cap,
            f"What is the liability cap in the {short} service agreement?",
            f"What is the most that Meridian or {short} could be made to pay the other if things go wrong?",
        ),
        Fact(
            f"not less than {insurance}",
            f"How much public liability insurance must Meridian hold under the {short} service agreement?",
            f"What level of cover against injury and property claims does the {short} contract require Meridian to carry?",
        ),
        Fact(law, f"Which law governs the {short} service agreement?", rng.choice(LAW_PARAPHRASE).format(short=short)),
        Fact(
            f"{visits} times per year",
            f"How many planned maintenance visits per year does the {short} service agreement include?",
            f"How often will Meridian come to {short}'s sites for routine servicing?",
        ),
    ]
    meta = [("Agreement", f"MFS-SA-{rng.randint(1000, 9999)}"), ("Date", _date(rng, 2019, 2024)), ("Customer", party)]
    return Doc(
        f"contracts/service/{short.lower()}-maintenance-services-agreement",
        f"Maintenance Services Agreement – {party}",
        meta,
        sections,
        fmt,
        facts,
        entity=short,
    )


NDA_PURPOSES = (
    "a joint tender for the Harbour Road pumping station upgrade",
    "a proposed acquisition of a regional HVAC maintenance business",
    "evaluating a remote monitoring platform for standby generators",
    "a pilot of predictive maintenance on compressed air systems",
    "a shared spare parts warehouse in the north-east",
    "a bid for the county council's school heating framework",
    "developing a training course for refrigerant-certified technicians",
    "a trial of digital radios for lone workers",
    "integrating asset registers with a building management system",
    "a joint venture for hospital estates maintenance",
    "a framework for emergency generator hire",
    "benchmarking energy use of rooftop units",
)


def nda(short: str, purpose: str, rng: random.Random, fmt: str) -> Doc:
    """A mutual NDA: duration, return of information, non-solicitation, purpose, law."""
    party = _party(short, rng)
    years = rng.choice((2, 3, 4, 5, 7, 10))
    days = rng.choice((5, 7, 10, 14, 30))
    months = rng.choice((6, 9, 12, 18, 24))
    law, courts = rng.choice(LAWS)
    sections = [
        _clauses(
            "1. Parties and purpose",
            [
                f'This mutual non-disclosure agreement is made between {US} ("Meridian") and {party} ("{short}").',
                f'Meridian and {short} wish to exchange information for the purpose of {purpose} (the "Purpose").',
            ],
        ),
        _clauses(
            "2. Confidential Information",
            [
                "Confidential Information means all information disclosed by one party to the other, in any form, that is marked confidential or that a reasonable person would understand to be confidential, including prices, customer lists, designs, drawings and know-how.",
                "Confidential Information does not include information that is or becomes public other than through a breach of this Agreement, was lawfully known to the recipient before disclosure, is received from a third party without restriction, or is independently developed.",
            ],
        ),
        _clauses(
            "3. Obligations",
            [
                "The recipient shall use the Confidential Information only for the Purpose and shall not disclose it except to its employees and professional advisers who need to know it and are bound by equivalent obligations.",
                "The recipient shall protect the Confidential Information with at least the care it uses for its own confidential information, and never less than reasonable care.",
                "A recipient compelled by law to disclose Confidential Information shall, where lawful, give the discloser prompt notice so that it may seek a protective order.",
            ],
        ),
        _clauses(
            "4. Return and destruction",
            [
                f"The recipient shall return or destroy all Confidential Information, including copies, within {days} days of a written request from the discloser, and confirm in writing that it has done so.",
            ],
        ),
        _clauses(
            "5. Duration",
            [
                f"The obligations in this Agreement continue for {years} years from the date of disclosure of the relevant information, notwithstanding the end of discussions about the Purpose.",
            ],
        ),
        _clauses(
            "6. Non-solicitation",
            [
                f"For {months} months after the last disclosure, neither Meridian nor {short} shall solicit for employment any employee of the other who was involved in the Purpose. General advertisements are not solicitation.",
            ],
        ),
        _clauses(
            "7. Remedies",
            [
                "Damages may not be an adequate remedy for a breach of this Agreement, and the discloser is entitled to seek injunctive relief.",
                "No licence under any intellectual property right is granted by this Agreement.",
            ],
        ),
        _clauses(
            "8. Governing law", [f"This Agreement is governed by {law}, and the {courts} have exclusive jurisdiction."]
        ),
    ]
    facts = [
        Fact(
            f"{years} years from the date of disclosure",
            f"How long do the confidentiality obligations last under the NDA with {short}?",
            f"For how many years must Meridian keep {short}'s secrets?",
        ),
        Fact(
            f"within {days} days of a written request",
            f"Within how many days must confidential information be returned under the {short} NDA?",
            f"How quickly must papers be handed back or shredded once {short} asks for them?",
        ),
        Fact(
            f"For {months} months after the last disclosure",
            f"How long is the non-solicitation period in the {short} NDA?",
            f"For how long after the talks is Meridian barred from trying to hire {short}'s people?",
        ),
        Fact(
            purpose,
            f"What is the purpose of the non-disclosure agreement with {short}?",
            f"Why did Meridian and {short} sign a secrecy agreement?",
        ),
        Fact(
            law,
            f"Which law governs the NDA with {short}?",
            rng.choice(LAW_PARAPHRASE).format(short=short).replace("the contract", "the secrecy agreement"),
        ),
    ]
    meta = [("Reference", f"MFS-NDA-{rng.randint(100, 999)}"), ("Date", _date(rng, 2020, 2025))]
    return Doc(
        f"contracts/nda/{short.lower()}-mutual-nda",
        f"Mutual Non-Disclosure Agreement – {party}",
        meta,
        sections,
        fmt,
        facts,
        entity=short,
    )


TOWNS = (
    "Leeds",
    "Bristol",
    "Derby",
    "Swindon",
    "Warrington",
    "Ipswich",
    "Carlisle",
    "Exeter",
    "Norwich",
    "Stoke-on-Trent",
    "Gateshead",
    "Reading",
)


def lease(short: str, town: str, rng: random.Random, fmt: str) -> Doc:
    """A depot lease (Meridian is tenant): rent, break clause, rent review, deposit, use."""
    party = f"{short} Estates Ltd"
    rent = rng.randrange(28_000, 190_000, 500)
    years = rng.choice((5, 6, 8, 10, 12, 15))
    break_year = rng.choice(tuple(y for y in (3, 4, 5, 6) if y < years))
    break_notice = rng.choice((3, 6, 9, 12))
    review = rng.choice((3, 4, 5))
    deposit = rng.choice(("three months' rent", "four months' rent", "six months' rent", "twelve months' rent"))
    unit = f"Unit {rng.randint(1, 24)}, {rng.choice(('Canal', 'Station', 'Meadow', 'Forge', 'Orchard', 'Beacon'))} Trading Estate, {town}"
    use = rng.choice(
        (
            "storage and distribution of engineering spare parts, with ancillary offices",
            "a vehicle depot and workshop for field service vans, with ancillary offices",
            "light industrial repair of pumps and motors, with ancillary storage",
            "a training centre and stores for maintenance engineers",
        )
    )
    sections = [
        _clauses(
            "1. Particulars",
            [
                f'Landlord: {party} ("the Landlord"). Tenant: {US} ("the Tenant").',
                f"Premises: {unit}, shown edged red on the attached plan, including the yard and twelve parking spaces.",
                f"Term: {years} years from the Term Commencement Date.",
            ],
        ),
        _clauses(
            "2. Rent",
            [
                f"The Tenant shall pay a yearly rent of GBP {rent:,} exclusive of VAT, by equal quarterly payments in advance on the usual quarter days.",
                f"The rent shall be reviewed every {review} years of the Term to the open market rent, upwards only.",
                f"On completion the Tenant shall pay a rent deposit equal to {deposit}, to be held by the Landlord in a designated account.",
            ],
        ),
        _clauses(
            "3. Use",
            [
                f"The Tenant shall use the Premises only for {use}, and for no other purpose without the Landlord's written consent."
            ],
        ),
        _clauses(
            "4. Repair and decoration",
            [
                "The Tenant shall keep the interior of the Premises in good and substantial repair, excluding damage by insured risks.",
                "The Tenant shall decorate the interior in the last year of the Term in colours approved by the Landlord.",
                "The Landlord shall maintain the structure, roof and common parts and recover the cost through the service charge.",
            ],
        ),
        _clauses(
            "5. Alienation",
            [
                "The Tenant shall not assign or underlet the whole of the Premises without the Landlord's consent, which shall not be unreasonably withheld, and shall not underlet part."
            ],
        ),
        _clauses(
            "6. Break clause",
            [
                f"The Tenant may terminate this Lease on the {break_year}th anniversary of the Term Commencement Date by giving the Landlord not less than {break_notice} months' written notice, provided that the rent has been paid in full and vacant possession is given.",
            ],
        ),
        _clauses(
            "7. Insurance",
            [
                "The Landlord shall insure the building against the insured risks and the Tenant shall repay a fair proportion of the premium."
            ],
        ),
        _clauses("8. Governing law", ["This Lease is governed by the laws of England and Wales."]),
    ]
    facts = [
        Fact(
            f"GBP {rent:,}",
            f"What is the yearly rent for the {town} depot?",
            f"How much does Meridian pay each year to occupy its premises in {town}?",
        ),
        Fact(
            f"not less than {break_notice} months' written notice",
            f"How much notice does Meridian need to give to use the break clause in the {town} lease?",
            f"If Meridian wants to leave the {town} unit early, how far ahead must it tell the landlord?",
        ),
        Fact(
            f"every {review} years of the Term",
            f"How often is the rent reviewed under the {town} lease?",
            f"How frequently can {short} Estates reset the price Meridian pays for the {town} premises?",
        ),
        Fact(
            deposit,
            f"What rent deposit is payable under the {town} lease?",
            f"How much money did Meridian have to put down as security for the {town} unit?",
        ),
        Fact(
            use,
            f"What is the permitted use of the premises under the {town} lease?",
            f"What is Meridian allowed to do in the {town} building?",
        ),
        Fact(
            f"{years} years from the Term Commencement Date",
            f"What is the term of the {town} lease?",
            f"For how long did Meridian sign up to rent the {town} unit?",
        ),
    ]
    meta = [("Lease date", _date(rng, 2015, 2024)), ("Premises", unit)]
    return Doc(
        f"contracts/leases/{town.lower()}-depot-lease", f"Lease of {unit}", meta, sections, fmt, facts, entity=town
    )


def supply_agreement(short: str, goods: str, rng: random.Random, fmt: str) -> Doc:
    """Meridian buys parts: lead time, warranty, liquidated damages, payment, law."""
    party = _party(short, rng)
    lead = rng.choice((3, 5, 7, 10, 15, 20))
    warranty = rng.choice((6, 12, 18, 24, 36))
    ld = rng.choice(("0.5", "1", "1.5", "2", "2.5"))
    ld_cap = rng.choice(("5", "10", "15", "20"))
    pay = rng.choice((30, 45, 60))
    law, courts = rng.choice(LAWS)
    sections = [
        _clauses(
            "1. Parties", [f'This Agreement is between {party} ("{short}" or "the Supplier") and {US} ("Meridian").']
        ),
        _clauses(
            "2. Supply of Goods",
            [
                f'The Supplier shall supply {goods} (the "Goods") ordered by Meridian by purchase order during the term of this Agreement.',
                "Each purchase order is a separate contract incorporating these terms; no other terms apply.",
            ],
        ),
        _clauses(
            "3. Delivery",
            [
                f"{short} shall deliver the Goods to the address in the purchase order within {lead} Business Days of the purchase order.",
                f"If delivery is late, {short} shall pay liquidated damages of {ld} percent of the price of the delayed Goods for each week of delay, up to a maximum of {ld_cap} percent of that price.",
                "Risk passes on delivery; title passes on payment.",
            ],
        ),
        _clauses(
            "4. Quality and warranty",
            [
                "The Goods shall conform to their specification, be of satisfactory quality and free from defects in design, material and workmanship.",
                f"{short} warrants the Goods for {warranty} months from the date of delivery and shall repair or replace defective Goods free of charge.",
            ],
        ),
        _clauses(
            "5. Price and payment",
            [
                "Prices are fixed for twelve months and then reviewed by agreement.",
                f"Meridian shall pay {short}'s undisputed invoices within {pay} days of the end of the month of receipt.",
            ],
        ),
        _clauses("6. General", list(rng.sample(GENERAL, 3))),
        _clauses(
            "7. Governing law", [f"This Agreement is governed by {law}; the {courts} have exclusive jurisdiction."]
        ),
    ]
    facts = [
        Fact(
            f"within {lead} Business Days of the purchase order",
            f"What is the delivery lead time in the supply agreement with {short}?",
            f"How long does {short} have to get ordered parts to Meridian?",
        ),
        Fact(
            f"{warranty} months from the date of delivery",
            f"How long is the warranty on goods supplied by {short}?",
            f"For how long will {short} fix or swap faulty parts it sold to Meridian?",
        ),
        Fact(
            f"{ld} percent of the price of the delayed Goods for each week of delay",
            f"What liquidated damages apply for late delivery under the {short} supply agreement?",
            f"What penalty does {short} pay Meridian when a shipment turns up late?",
        ),
        Fact(
            f"within {pay} days of the end of the month of receipt",
            f"When must Meridian pay {short}'s invoices?",
            f"How long can Meridian wait before paying {short} for parts?",
        ),
    ]
    meta = [("Reference", f"MFS-SUP-{rng.randint(100, 999)}"), ("Date", _date(rng, 2019, 2025))]
    return Doc(
        f"contracts/supply/{short.lower()}-supply-agreement",
        f"Supply Agreement – {party}",
        meta,
        sections,
        fmt,
        facts,
        entity=short,
    )


SUPPLY_GOODS = (
    "mechanical seals and pump spares",
    "diesel engine filters and service kits",
    "compressor oil, separators and filters",
    "HVAC filters and fan belts",
    "radio batteries and accessories",
    "electric motors up to 55 kW",
    "refrigerant and recovery cylinders",
    "personal protective equipment",
)


# ---------------------------------------------------------------------------
# Internal policies
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One policy statement; ``{v}`` is the drawn value, ``answer`` says which part is asked."""

    sentence: str
    value: Value
    keyword: str
    para: str
    answer: str = "{v}"


@dataclass(frozen=True)
class Topic:
    key: str
    title: str
    purpose: str
    groups: tuple[tuple[str, tuple[Rule, ...]], ...]
    notes: tuple[str, ...] = ()


def gbp(lo: int, hi: int, step: int) -> Value:
    return lambda rng: f"GBP {rng.randrange(lo, hi + 1, step):,}"


TOPICS = (
    Topic(
        "travel",
        "Travel and expenses policy",
        "This policy sets out how business travel is booked and which expenses the company reimburses, so that costs are controlled and treated fairly.",
        (
            (
                "Booking travel",
                (
                    Rule(
                        "Hotel bookings must not exceed {v} per night outside London, including breakfast.",
                        gbp(75, 140, 5),
                        "What is the maximum hotel rate per night outside London under the {policy}?",
                        "How pricey a room may I book when staying away (not in the capital) under {policy_para}?",
                    ),
                    Rule(
                        "Flights longer than {v} may be booked in premium economy; all other flights are economy class.",
                        pick("4 hours", "5 hours", "6 hours", "7 hours", "8 hours"),
                        "When may flights be booked in premium economy under the {policy}?",
                        "How long does a journey by air have to be before I can sit in a better cabin, according to {policy_para}?",
                        "Flights longer than {v}",
                    ),
                ),
            ),
            (
                "Allowances",
                (
                    Rule(
                        "The daily meal allowance for overnight stays is {v}, without receipts.",
                        gbp(20, 60, 5),
                        "What is the daily meal allowance in the {policy}?",
                        "How much can I spend on food each day when I am away overnight, under {policy_para}?",
                        "{v}, without receipts",
                    ),
                    Rule(
                        "Business journeys in a private car are reimbursed at {v} per mile.",
                        pick("40p", "42p", "45p", "48p", "50p", "55p"),
                        "What is the mileage rate for private cars under the {policy}?",
                        "How much do I get back for each mile driven in my own vehicle under {policy_para}?",
                        "{v} per mile",
                    ),
                ),
            ),
            (
                "Claims",
                (
                    Rule(
                        "Expense claims must be submitted within {v} of the expense being incurred; later claims need Finance Director approval.",
                        pick("30 days", "45 days", "60 days", "90 days"),
                        "What is the deadline for submitting expense claims under the {policy}?",
                        "How long after paying for something can I still get the money back, according to {policy_para}?",
                        "within {v} of the expense being incurred",
                    ),
                    Rule(
                        "Itemised receipts are required for any single expense over {v}.",
                        gbp(5, 30, 5),
                        "Above what amount are itemised receipts required under the {policy}?",
                        "From what amount do I need to keep the till slip, according to {policy_para}?",
                        "any single expense over {v}",
                    ),
                ),
            ),
        ),
        (
            "Alcohol is not reimbursed unless it is part of approved client hospitality.",
            "Personal travel insurance is not needed: the company policy covers business trips worldwide.",
        ),
    ),
    Topic(
        "remote-working",
        "Remote working policy",
        "This policy explains when office-based employees may work from home and what the company provides to make it safe and productive.",
        (
            (
                "Eligibility and patterns",
                (
                    Rule(
                        "Office-based employees may work remotely for up to {v} per week, agreed with their manager.",
                        pick("one day", "two days", "three days", "four days"),
                        "How many days per week may employees work remotely under the {policy}?",
                        "How much of the working week can I spend at home instead of the office, under {policy_para}?",
                        "up to {v} per week",
                    ),
                    Rule(
                        "Core hours, when everyone must be available for calls, are {v} on working days.",
                        pick("10:00 to 15:00", "10:00 to 16:00", "09:30 to 15:30", "11:00 to 15:00"),
                        "What are the core hours in the {policy}?",
                        "During which part of the day must home workers be reachable, according to {policy_para}?",
                    ),
                ),
            ),
            (
                "Equipment and safety",
                (
                    Rule(
                        "A one-off home office equipment allowance of {v} is available on request.",
                        gbp(150, 500, 50),
                        "What is the home office equipment allowance under the {policy}?",
                        "How much will the company give me towards a desk and chair at home, under {policy_para}?",
                    ),
                    Rule(
                        "Each remote worker must complete the home workstation self-assessment within {v} of starting remote work.",
                        pick("two weeks", "four weeks", "30 days", "one month"),
                        "When must the home workstation self-assessment be completed under the {policy}?",
                        "How soon after I start working from home do I have to fill in the desk safety check, per {policy_para}?",
                        "within {v} of starting remote work",
                    ),
                ),
            ),
        ),
        ("Remote work is not available to field engineers, whose work is at customer sites.",),
    ),
    Topic(
        "information-security",
        "Information security policy",
        "This policy protects customer data and the company's systems from loss, misuse and unauthorised access.",
        (
            (
                "Accounts and passwords",
                (
                    Rule(
                        "Passwords must be at least {v} long and must not be reused across systems.",
                        pick("10 characters", "12 characters", "14 characters", "15 characters", "16 characters"),
                        "What is the minimum password length in the {policy}?",
                        "How long does my login secret have to be, according to {policy_para}?",
                        "at least {v} long",
                    ),
                    Rule(
                        "Accounts are locked after {v} consecutive failed sign-in attempts.",
                        pick("three", "five", "six", "eight", "ten"),
                        "After how many failed sign-in attempts is an account locked under the {policy}?",
                        "How many wrong guesses at my login before I am shut out, per {policy_para}?",
                        "after {v} consecutive failed sign-in attempts",
                    ),
                    Rule(
                        "Screens must lock automatically after {v} of inactivity.",
                        pick("2 minutes", "5 minutes", "10 minutes", "15 minutes"),
                        "After how long must screens lock automatically under the {policy}?",
                        "How quickly should an unattended computer go to the lock screen, according to {policy_para}?",
                        "after {v} of inactivity",
                    ),
                ),
            ),
            (
                "Incidents",
                (
                    Rule(
                        "Suspected security incidents, including lost devices, must be reported to the Service Desk within {v} of discovery.",
                        pick("30 minutes", "one hour", "two hours", "four hours", "24 hours"),
                        "How quickly must security incidents be reported under the {policy}?",
                        "If I lose my work phone, how soon do I have to tell IT, per {policy_para}?",
                        "within {v} of discovery",
                    ),
                ),
            ),
        ),
        (
            "Removable storage is blocked on company laptops; use the approved file-sharing service instead.",
            "Multi-factor authentication is required for all remote access.",
        ),
    ),
    Topic(
        "lone-working",
        "Lone working procedure",
        "Field engineers often work alone at customer sites. This procedure makes sure that someone always knows where they are and raises help quickly if something goes wrong.",
        (
            (
                "Check-in",
                (
                    Rule(
                        "Lone workers must check in with the duty controller every {v} while on site.",
                        pick("45 minutes", "60 minutes", "90 minutes", "2 hours"),
                        "How often must lone workers check in under the {policy}?",
                        "How regularly do engineers on their own have to let the control room know they are fine, under {policy_para}?",
                        "every {v} while on site",
                    ),
                    Rule(
                        "If a check-in is missed, the controller tries to call the worker and escalates to the emergency contact after {v}.",
                        pick("10 minutes", "15 minutes", "20 minutes", "30 minutes"),
                        "When is a missed check-in escalated under the {policy}?",
                        "How long will the control room wait before raising the alarm when an engineer goes quiet, according to {policy_para}?",
                        "escalates to the emergency contact after {v}",
                    ),
                ),
            ),
            (
                "High-risk work",
                (
                    Rule(
                        "Work in a confined space, on live electrical equipment, or at height above {v} must never be carried out alone.",
                        pick("2 metres", "2.5 metres", "3 metres"),
                        "Above what height is lone working prohibited under the {policy}?",
                        "How high up is too high to work with nobody else around, according to {policy_para}?",
                        "at height above {v}",
                    ),
                ),
            ),
        ),
        ("Lone workers carry a radio or phone with the man-down function enabled.",),
    ),
    Topic(
        "driving",
        "Driving at work policy",
        "Driving is the most dangerous thing most of our engineers do. This policy sets the rules for anyone who drives on company business.",
        (
            (
                "Hours and breaks",
                (
                    Rule(
                        "Drivers must take a break of at least {v} of continuous driving.",
                        pick(
                            "15 minutes after every 2 hours",
                            "20 minutes after every 2 hours",
                            "15 minutes after every 2.5 hours",
                            "30 minutes after every 3 hours",
                        ),
                        "How often must drivers take a break under the {policy}?",
                        "How long can I stay behind the wheel before stopping for a rest, and for how long, per {policy_para}?",
                    ),
                    Rule(
                        "Total driving in one working day must not exceed {v}, including the commute.",
                        pick("8 hours", "9 hours", "10 hours"),
                        "What is the maximum daily driving time under the {policy}?",
                        "What is the most time I may spend on the road in a day, according to {policy_para}?",
                        "must not exceed {v}",
                    ),
                ),
            ),
            (
                "Vehicles and incidents",
                (
                    Rule(
                        "Any collision involving a company vehicle must be reported to the fleet team within {v}, even if nobody was hurt.",
                        pick("2 hours", "12 hours", "24 hours", "48 hours"),
                        "How quickly must an accident in a company vehicle be reported under the {policy}?",
                        "If I bump the van, how soon do I have to tell the fleet people, according to {policy_para}?",
                        "to the fleet team within {v}",
                    ),
                    Rule(
                        "Drivers must complete the walk-around vehicle check {v}.",
                        pick(
                            "before the first journey of each day",
                            "every Monday morning",
                            "at the start of every shift",
                        ),
                        "When must the walk-around vehicle check be done under the {policy}?",
                        "How often do I have to look the van over before I drive it, per {policy_para}?",
                    ),
                ),
            ),
        ),
        ("Hand-held phones must never be used while driving.", "Fuel cards may be used only for company vehicles."),
    ),
    Topic(
        "ppe",
        "Personal protective equipment policy",
        "This policy sets out which personal protective equipment the company provides, when it must be worn, and how it is maintained.",
        (
            (
                "When PPE must be worn",
                (
                    Rule(
                        "Hearing protection is mandatory wherever the noise level exceeds {v}.",
                        pick("80 dB(A)", "82 dB(A)", "85 dB(A)"),
                        "Above what noise level is hearing protection mandatory under the {policy}?",
                        "How loud does it have to get before I must wear ear defenders, per {policy_para}?",
                        "noise level exceeds {v}",
                    ),
                    Rule(
                        "High-visibility clothing of at least {v} must be worn on roads, car parks and yards.",
                        pick("Class 2", "Class 3"),
                        "What class of high-visibility clothing is required under the {policy}?",
                        "How bright does my reflective vest need to be when I work near traffic, under {policy_para}?",
                        "at least {v}",
                    ),
                ),
            ),
            (
                "Care and replacement",
                (
                    Rule(
                        "Safety helmets must be replaced {v} after the date of manufacture, or at once after any impact.",
                        pick("3 years", "4 years", "5 years"),
                        "When must safety helmets be replaced under the {policy}?",
                        "How old can a hard hat get before it has to be thrown away, according to {policy_para}?",
                        "{v} after the date of manufacture",
                    ),
                    Rule(
                        "The company pays for safety footwear up to {v} per employee per year.",
                        gbp(60, 150, 10),
                        "How much does the company pay for safety footwear under the {policy}?",
                        "What is my yearly budget for work boots, according to {policy_para}?",
                        "up to {v} per employee per year",
                    ),
                ),
            ),
        ),
        ("PPE is the last line of defence; eliminate or control the hazard first.",),
    ),
    Topic(
        "on-call",
        "On-call and call-out policy",
        "Customers rely on us around the clock. This policy explains how on-call rotas work and how on-call engineers are paid and rested.",
        (
            (
                "Standby",
                (
                    Rule(
                        "The weekly standby payment for an on-call engineer is {v}.",
                        gbp(120, 320, 10),
                        "What is the weekly standby payment in the {policy}?",
                        "How much extra do I earn for a week of being available out of hours, under {policy_para}?",
                    ),
                    Rule(
                        "On-call engineers must be on their way to site within {v} of accepting a call.",
                        pick("20 minutes", "30 minutes", "45 minutes", "60 minutes"),
                        "How quickly must on-call engineers set off after accepting a call under the {policy}?",
                        "After I take an emergency job at night, how soon must I be driving to it, per {policy_para}?",
                        "within {v} of accepting a call",
                    ),
                ),
            ),
            (
                "Pay and rest",
                (
                    Rule(
                        "Time spent on a call-out is paid at {v} the basic hourly rate, with a minimum of two hours.",
                        pick("1.25 times", "1.5 times", "1.75 times", "double"),
                        "At what rate is call-out time paid under the {policy}?",
                        "How much am I paid per hour when I get called out, according to {policy_para}?",
                        "paid at {v} the basic hourly rate",
                    ),
                    Rule(
                        "After a call-out that ends after midnight, an engineer is entitled to a rest period of {v} before the next shift starts.",
                        pick("8 hours", "10 hours", "11 hours", "12 hours"),
                        "What rest period follows a call-out that ends after midnight under the {policy}?",
                        "If I was working late into the night on an emergency, how long must I sleep before my next shift, per {policy_para}?",
                        "a rest period of {v}",
                    ),
                ),
            ),
        ),
        ("Rotas are published at least four weeks ahead.",),
    ),
    Topic(
        "gifts",
        "Anti-bribery, gifts and hospitality policy",
        "The company does not tolerate bribery in any form. This policy sets out how gifts and hospitality are accepted, offered and recorded.",
        (
            (
                "Gifts and hospitality",
                (
                    Rule(
                        "Any gift or hospitality worth more than {v} must be recorded in the gifts register.",
                        gbp(20, 150, 10),
                        "Above what value must gifts be recorded in the gifts register under the {policy}?",
                        "From what value do I have to write down a present I received from a supplier, per {policy_para}?",
                        "worth more than {v}",
                    ),
                    Rule(
                        "Register entries must be made within {v} of the gift being received or offered.",
                        pick("5 working days", "10 working days", "14 days", "30 days"),
                        "How soon must gifts be entered in the register under the {policy}?",
                        "How long do I have to log a present after getting it, according to {policy_para}?",
                        "within {v} of the gift",
                    ),
                ),
            ),
        ),
        (
            "Cash or cash equivalents must never be accepted, whatever the amount.",
            "Gifts must never be offered to public officials.",
        ),
    ),
    Topic(
        "annual-leave",
        "Annual leave policy",
        "This policy explains how much paid holiday employees receive and how it is booked.",
        (
            (
                "Entitlement",
                (
                    Rule(
                        "Full-time employees receive {v} of annual leave plus public holidays.",
                        pick("23 days", "25 days", "26 days", "28 days"),
                        "How many days of annual leave do full-time employees get under the {policy}?",
                        "How much paid holiday do I get in a year, excluding bank holidays, under {policy_para}?",
                        "{v} of annual leave",
                    ),
                    Rule(
                        "Up to {v} of unused leave may be carried over into the next leave year.",
                        pick("three days", "five days", "eight days"),
                        "How much unused leave can be carried over under the {policy}?",
                        "If I don't use all my holiday, how much can I keep for next year, per {policy_para}?",
                        "Up to {v} of unused leave",
                    ),
                ),
            ),
            (
                "Booking",
                (
                    Rule(
                        "Requests for more than one week of leave must be made at least {v} in advance.",
                        pick("four weeks", "six weeks", "eight weeks"),
                        "How far in advance must long leave requests be made under the {policy}?",
                        "How early must I ask if I want a fortnight off, according to {policy_para}?",
                        "at least {v} in advance",
                    ),
                    Rule(
                        "The leave year runs from {v}.",
                        pick("1 January to 31 December", "1 April to 31 March", "1 October to 30 September"),
                        "When does the leave year run under the {policy}?",
                        "On what dates does my holiday allowance reset, per {policy_para}?",
                    ),
                ),
            ),
        ),
    ),
    Topic(
        "whistleblowing",
        "Whistleblowing policy",
        "Anyone who suspects wrongdoing at work should be able to raise it safely. This policy explains how, and protects those who do.",
        (
            (
                "Raising a concern",
                (
                    Rule(
                        "Concerns can be raised confidentially through the independent hotline on {v}, 24 hours a day.",
                        lambda rng: f"0800 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                        "What is the whistleblowing hotline number in the {policy}?",
                        "Which phone number do I ring to report wrongdoing anonymously, per {policy_para}?",
                    ),
                    Rule(
                        "The Ethics Officer will acknowledge a concern within {v} and explain the next steps.",
                        pick("3 working days", "5 working days", "7 days"),
                        "How quickly will a concern be acknowledged under the {policy}?",
                        "How long until someone confirms they have received my report of misconduct, according to {policy_para}?",
                        "acknowledge a concern within {v}",
                    ),
                ),
            ),
        ),
        ("No one will suffer any detriment for raising a genuine concern, even if it turns out to be mistaken.",),
    ),
    Topic(
        "procurement",
        "Procurement policy",
        "This policy ensures that the company buys goods and services at the right price, from suitable suppliers, with proper approval.",
        (
            (
                "Quotations and tenders",
                (
                    Rule(
                        "Purchases above {v} require three written quotations.",
                        gbp(1000, 10000, 500),
                        "Above what value are three written quotations required under the {policy}?",
                        "How much does something have to cost before I need three prices from different sellers, per {policy_para}?",
                        "Purchases above {v} require three",
                    ),
                    Rule(
                        "Purchases above {v} require a competitive tender approved by the Finance Director.",
                        gbp(25000, 100000, 5000),
                        "When is a competitive tender required under the {policy}?",
                        "At what spend do we have to run a formal bidding exercise, according to {policy_para}?",
                        "Purchases above {v} require a competitive",
                    ),
                ),
            ),
        ),
        (
            "Purchase orders must be raised before goods or services are ordered.",
            "New suppliers must pass the supplier onboarding checks before the first order.",
        ),
    ),
    Topic(
        "records-retention",
        "Records retention policy",
        "The company keeps records for as long as the law and the business need them, and no longer. This policy sets the retention periods.",
        (),
    ),
)

RETENTION = (
    ("Job cards and service reports", "How long do we keep the engineers' paperwork from service jobs?"),
    ("Customer contracts", "How long are signed customer deals kept after they end?"),
    ("Invoices and accounting records", "How long must bills and bookkeeping records be held?"),
    ("CCTV footage", "How long do we hang on to security camera recordings?"),
    ("Vehicle tracking data", "How long is the GPS history of our vans stored?"),
    ("Personnel files", "How long are HR files for people who have left kept?"),
    ("Accident and incident reports", "How long are records of injuries at work held?"),
    ("Refrigerant logs", "How long do we keep records of the gas added to air-conditioning systems?"),
    ("Applications from unsuccessful candidates", "How long do we keep CVs from people we did not hire?"),
)
PERIODS = (
    "30 days",
    "90 days",
    "6 months",
    "1 year",
    "2 years",
    "3 years",
    "5 years",
    "6 years after the end of the contract",
    "7 years",
    "6 years after employment ends",
    "40 years",
    "12 years",
)

POLICY_GENERIC = {
    "Scope": "This policy applies to all employees, agency workers and contractors of {company}, wherever they work.",
    "Responsibilities": "Managers make sure their teams know and follow this policy. Employees follow it and ask their manager or HR when something is unclear. HR keeps it up to date.",
    "Breaches": "A breach of this policy may lead to disciplinary action, up to and including dismissal. Report breaches to your manager or through the whistleblowing hotline.",
}


@dataclass(frozen=True)
class PolicyVersion:
    company: str
    year: int
    status: str  # "Current" or the superseding version
    kw_label: str
    para_label: str


def policy(topic: Topic, version: PolicyVersion, rng: random.Random, fmt: str) -> Doc:
    """A policy: purpose, scope, rules grouped under headings, responsibilities, breaches."""
    facts: list[Fact] = []
    sections = [
        Section("1. Purpose", [Para(topic.purpose)]),
        Section("2. Scope", [Para(POLICY_GENERIC["Scope"].format(company=version.company))]),
    ]
    number = 3
    for heading, rules in topic.groups:
        blocks: list[Block] = []
        for rule in rules:
            value = rule.value(rng)
            blocks.append(Para(rule.sentence.format(v=value)))
            facts.append(
                Fact(
                    rule.answer.format(v=value),
                    rule.keyword.format(policy=version.kw_label),
                    rule.para.format(policy_para=version.para_label),
                )
            )
        sections.append(Section(f"{number}. {heading}", blocks))
        number += 1
    if topic.key == "records-retention":
        periods = rng.sample(PERIODS, len(RETENTION))
        rows = tuple((record, period) for (record, _), period in zip(RETENTION, periods, strict=True))
        for (record, para), period in zip(RETENTION, periods, strict=True):
            facts.append(Fact(period, f"How long are {record.lower()} kept under the {version.kw_label}?", para))
        sections.append(
            Section(
                f"{number}. Retention schedule",
                [
                    Para(
                        "Keep each kind of record for the period below, counted from the date of the record unless stated otherwise, then destroy it securely."
                    ),
                    Table("Retention schedule", ("Record", "Keep for"), rows),
                ],
            )
        )
        number += 1
    if topic.notes:
        sections.append(Section(f"{number}. Other rules", [Bullets(topic.notes)]))
        number += 1
    for heading in ("Responsibilities", "Breaches"):
        sections.append(
            Section(f"{number}. {heading}", [Para(POLICY_GENERIC[heading].format(company=version.company))])
        )
        number += 1
    status = "Current" if version.status == "Current" else f"Superseded by {version.status}"
    meta = [
        ("Owner", rng.choice(("HR", "Health and Safety", "Finance", "IT", "Operations"))),
        ("Version", f"{version.year}.{rng.randint(1, 3)}"),
        ("Status", status),
        ("Approved", _date(rng, version.year, version.year)),
    ]
    company_slug = "offshore" if "Offshore" in version.company else "mfs"
    return Doc(
        f"policies/{company_slug}-{topic.key}-{version.year}",
        f"{version.company} – {topic.title} ({version.year})",
        meta,
        sections,
        fmt,
        facts,
        entity=version.company,
    )


POLICY_NOUNS = {
    "travel": "travel rules",
    "remote-working": "home-working rules",
    "information-security": "IT security rules",
    "lone-working": "rules for working alone",
    "driving": "rules for drivers",
    "ppe": "protective kit rules",
    "on-call": "out-of-hours rules",
    "gifts": "rules on presents",
    "annual-leave": "holiday rules",
    "whistleblowing": "speak-up rules",
    "procurement": "buying rules",
    "records-retention": "record keeping rules",
}
MFS = "Meridian Field Services"
OFFSHORE = "Meridian Offshore"
SUPERSEDED = {"travel": 2022, "remote-working": 2021, "on-call": 2022}
OFFSHORE_TOPICS = ("travel", "lone-working", "ppe", "on-call")


def _policy_versions(topic: Topic) -> list[PolicyVersion]:
    """The current version, an older one where SUPERSEDED says so, an Offshore one where listed.
    Labels name the company (and the year when versions exist) so each question has one answer."""
    noun, title = POLICY_NOUNS[topic.key], topic.title.lower()
    old = SUPERSEDED.get(topic.key)
    if old is None:
        versions = [PolicyVersion(f"{MFS} Ltd", 2024, "Current", f"{MFS} {title}", f"{MFS}' {noun}")]
    else:
        versions = [
            PolicyVersion(f"{MFS} Ltd", 2024, "Current", f"2024 {MFS} {title}", f"the 2024 {noun} at {MFS}"),
            PolicyVersion(f"{MFS} Ltd", old, "version 2024", f"{old} {MFS} {title}", f"the {old} {noun} at {MFS}"),
        ]
    if topic.key in OFFSHORE_TOPICS:
        versions.append(
            PolicyVersion(f"{OFFSHORE} Ltd", 2024, "Current", f"{OFFSHORE} {title}", f"{OFFSHORE}'s {noun}")
        )
    return versions


@dataclass
class Corpus:
    docs: list[Doc]
    groups: dict[str, list[Doc]]


def build_corpus(seed: int) -> Corpus:
    """Every document, grouped by what it is (the groups set the question quotas)."""
    rng = random.Random(seed)

    def fmt(*options: str) -> str:
        return rng.choice(options)

    manuals = [
        manual(k, brand, model, prefix, rng, fmt("md", "html")) for k in KINDS for brand, model, prefix in k.models
    ]
    groups: dict[str, list[Doc]] = {"manual": [m.doc for m in manuals]}

    bulletins = []
    for i, m in enumerate(rng.sample(manuals, 14)):
        number = f"{m.brand[:3].upper()}-SB-{rng.randint(2022, 2025)}-{i + 11:02d}"
        bulletins.append(bulletin(m, number, revise=i % 2 == 0, rng=rng))
    groups["bulletin"] = bulletins

    reports = []
    pairs = [(site, m) for site in SITES for m in manuals]
    for site, m in rng.sample(pairs, 24):
        reports.append(visit_report(m, site, rng, fmt("txt", "txt", "md")))
    groups["report"] = reports
    groups["reference"] = [quick_reference(m, fmt("md", "html")) for m in rng.sample(manuals, 10)]
    groups["reference"] += [site_register(site, manuals, rng) for site in rng.sample(SITES, 6)]
    groups["reference"] += [toolbox_talk(topic, lines, rng) for topic, lines in TOOLBOX.items()]

    shorts = rng.sample(COUNTERPARTIES, 40)
    groups["service"] = [service_agreement(s, rng, fmt("txt", "md", "html"), SITES) for s in shorts[:14]]
    purposes = rng.sample(NDA_PURPOSES, 10)
    groups["nda"] = [nda(s, p, rng, fmt("txt", "html")) for s, p in zip(shorts[14:24], purposes, strict=True)]
    towns = rng.sample(TOWNS, 8)
    groups["lease"] = [lease(s, t, rng, fmt("txt", "md")) for s, t in zip(shorts[24:32], towns, strict=True)]
    goods = rng.sample(SUPPLY_GOODS, 8)
    groups["supply"] = [
        supply_agreement(s, g, rng, fmt("md", "html")) for s, g in zip(shorts[32:40], goods, strict=True)
    ]

    groups["policy"] = [policy(t, v, rng, fmt("md", "md", "html")) for t in TOPICS for v in _policy_versions(t)]
    docs = [doc for group in groups.values() for doc in group]
    return Corpus(docs, groups)


# ---------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------

QUOTAS = {"manual": 26, "bulletin": 6, "report": 6, "service": 10, "nda": 5, "lease": 4, "supply": 4, "policy": 19}

# Nothing in the corpus answers these. The in-domain ones sit close to it (a model that
# does not exist, a topic no policy covers); ``absent`` lists words that must not occur
# anywhere in the corpus, checked at generation time.
UNANSWERABLE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("in-domain", "What is the impeller nut torque for the Hydrane HX-900?", ("HX-900",)),
    ("in-domain", "What is the refrigerant charge of the Climavent RTU-20?", ("RTU-20",)),
    (
        "in-domain",
        "How often should the inverter firmware on the rooftop solar panels be updated?",
        ("solar", "inverter"),
    ),
    ("in-domain", "What is the parental leave entitlement for new fathers?", ("parental", "paternity", "maternity")),
    ("in-domain", "How long is the non-compete period in our employment contracts?", ("non-compete", "noncompete")),
    ("in-domain", "What hourly rate do we charge customers for weekend call-outs?", ("weekend",)),
    ("in-domain", "Which forklift trucks are used at the Bristol depot?", ("forklift",)),
    ("in-domain", "What is the safe working load of the crane at Hartside Quarry?", ("crane", "safe working load")),
    ("in-domain", "What pension contribution does Meridian make for its employees?", ("pension",)),
    ("in-domain", "How do I calibrate the portable gas detector?", ("gas detector",)),
    ("in-domain", "What is the liability cap in the service agreement with Acme Brewing?", ("Acme",)),
    ("in-domain", "What tyre pressure should the service vans run at?", ("tyre", "tire pressure")),
    ("in-domain", "What is the flue gas CO2 setting for the gas boiler?", ("boiler", "flue")),
    ("in-domain", "What is the annual rent for the Aberdeen depot?", ("Aberdeen",)),
    ("in-domain", "What is the guest Wi-Fi password at head office?", ("wi-fi", "wifi")),
    ("in-domain", "How do I reset the touchscreen controller on the Kessler K-30?", ("K-30", "touchscreen")),
    ("in-domain", "What is the maximum discharge pressure of the Corvel CP-120?", ("CP-120",)),
    ("in-domain", "How many sick days can I take without a doctor's note?", ("sick", "doctor")),
    ("in-domain", "What is the battery life of the Fieldcom FR-9 radio?", ("FR-9",)),
    ("in-domain", "How loud is the Voltmark VG-500 generator?", ("VG-500",)),
    ("off-topic", "What is the capital of Australia?", ("Australia", "Canberra")),
    ("off-topic", "How do I make a sourdough starter?", ("sourdough",)),
    ("off-topic", "Who wrote Pride and Prejudice?", ("Austen", "Prejudice")),
    ("off-topic", "How fast does light travel in a vacuum?", ("vacuum",)),
    ("off-topic", "How do you tie a bowline knot?", ("bowline",)),
    ("off-topic", "Which country won the 2014 football World Cup?", ("football", "World Cup")),
    ("off-topic", "How does photosynthesis work?", ("photosynthesis",)),
    ("off-topic", "How do you say thank you in Japanese?", ("Japanese",)),
    ("off-topic", "When is the best time to plant tomatoes?", ("tomato",)),
    ("off-topic", "How many moons does Mars have?", ("moons", "planet")),
    ("off-topic", "Can you recommend a good science fiction novel?", ("novel", "fiction")),
    ("off-topic", "How do I reverse a list in Python?", ("Python",)),
)


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form used to match answers to passages."""
    return " ".join(text.split()).casefold()


class _TextOf(html.parser.HTMLParser):
    """The visible text of an HTML page (what an indexer should see)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(path_or_text: str, fmt: str) -> str:
    """Text a reader sees: HTML without tags, styles or scripts; other formats as they are."""
    if fmt != "html":
        return path_or_text
    parser = _TextOf()
    parser.feed(path_or_text)
    parser.close()
    return " ".join(parser.parts)


def _block_text(block: Block) -> str:
    match block:
        case Para(text):
            return text
        case Bullets(items, _):
            return " ".join(items)
        case Table(caption, header, rows):
            return " ".join((caption, *header, *(c for row in rows for c in row)))
    return ""


def _entity_in_passage(doc: Doc, answer: str) -> bool | None:
    """Whether the block stating the answer also names the document's entity: if not, only
    the document's title tells it apart from its near-duplicates."""
    if doc.entity is None:
        return None
    for section in doc.sections:
        for block in section.blocks:
            text = _block_text(block)
            if answer in text:
                return normalise(doc.entity) in normalise(text)
    return None


def _answerable(doc: Doc, text: str, rng: random.Random) -> list[Fact]:
    """Facts fit to ask: not contradicted elsewhere, and their answer occurs once in the file
    (so that a passage containing it is the passage that answers)."""
    seen = normalise(visible_text(text, doc.fmt))
    fit = [f for f in doc.facts if f.usable and seen.count(normalise(f.answer)) == 1 and text.count(f.answer) == 1]
    rng.shuffle(fit)
    return fit


def choose_questions(corpus: Corpus, texts: dict[str, str], seed: int) -> list[dict[str, object]]:
    """Answerable questions by quota per group (one per document, round-robin), alternating
    keyword and paraphrase phrasing, then the unanswerable ones."""
    rng = random.Random(seed * 7919 + 1)
    questions: list[dict[str, object]] = []
    total = 0
    for group, quota in QUOTAS.items():
        docs = list(corpus.groups[group])
        rng.shuffle(docs)
        pools = {doc.rel: _answerable(doc, texts[doc.rel], rng) for doc in docs}
        chosen = 0
        while chosen < quota and any(pools.values()):
            for doc in docs:
                if chosen == quota or not pools[doc.rel]:
                    continue
                fact = pools[doc.rel].pop()
                style = "keyword" if total % 2 == 0 else "paraphrase"
                questions.append(
                    {
                        "q": fact.keyword if style == "keyword" else fact.paraphrase,
                        "path": doc.rel,
                        "answer": fact.answer,
                        "style": style,
                        "group": group,
                        "entity_in_passage": _entity_in_passage(doc, fact.answer),
                    }
                )
                chosen += 1
                total += 1
        if chosen < quota:
            raise CorpusError(f"only {chosen} of {quota} {group} questions have a unique answer")
    for style, question, _ in UNANSWERABLE:
        questions.append(
            {"q": question, "path": None, "answer": None, "style": style, "group": None, "entity_in_passage": None}
        )
    return questions


class CorpusError(Exception):
    """The generated corpus breaks one of its own guarantees (a bug in this script)."""


def validate(texts: dict[str, str], fmts: dict[str, str], questions: Sequence[dict[str, object]]) -> None:
    """Every answer occurs exactly in its file (raw and as visible text); nothing in the
    corpus mentions what the unanswerable questions ask about."""
    for item in questions:
        path, answer = item["path"], item["answer"]
        if path is None:
            continue
        assert isinstance(path, str) and isinstance(answer, str)
        text = texts[path]
        if text.count(answer) != 1:
            raise CorpusError(f"{path}: answer {answer!r} occurs {text.count(answer)} times")
        if normalise(answer) not in normalise(visible_text(text, fmts[path])):
            raise CorpusError(f"{path}: answer {answer!r} is not in the visible text")
    everything = normalise(" ".join(texts.values()))
    for _, question, absent in UNANSWERABLE:
        for word in absent:
            if normalise(word) in everything:
                raise CorpusError(f"unanswerable question {question!r}: the corpus mentions {word!r}")


@dataclass(frozen=True)
class Written:
    """What write_corpus wrote."""

    root: Path
    documents: int
    bytes: int
    questions: list[dict[str, object]]
    formats: dict[str, int]


def write_corpus(out: Path, seed: int = DEFAULT_SEED) -> Written:
    """Generate, validate and write the corpus and questions.json into ``out`` (empty or new)."""
    if out.exists() and any(out.iterdir()):
        raise CorpusError(f"{out} is not empty; give a new or empty directory")
    corpus = build_corpus(seed)
    texts = {doc.rel: render(doc) for doc in corpus.docs}
    if len(texts) != len(corpus.docs):
        raise CorpusError("two documents have the same path")
    fmts = {doc.rel: doc.fmt for doc in corpus.docs}
    questions = choose_questions(corpus, texts, seed)
    validate(texts, fmts, questions)
    total = 0
    for rel, text in sorted(texts.items()):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        target.write_bytes(data)
        total += len(data)
    (out / QUESTIONS_FILE).write_text(json.dumps(questions, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    formats: dict[str, int] = {}
    for doc in corpus.docs:
        formats[doc.fmt] = formats.get(doc.fmt, 0) + 1
    return Written(out, len(texts), total, questions, dict(sorted(formats.items())))


def question_pool(seed: int = DEFAULT_SEED) -> list[str]:
    """Every question the corpus could be asked (both phrasings of every fact): a large,
    realistic query set for latency measurements."""
    corpus = build_corpus(seed)
    return [q for doc in corpus.docs for fact in doc.facts for q in (fact.keyword, fact.paraphrase)]


_NUMBER = re.compile(r"\d+")


def _passages(seed: int) -> tuple[list[str], list[str]]:
    """Paragraphs and titles of the structured corpus, the material bulk documents reuse."""
    corpus = build_corpus(seed)
    paragraphs: list[str] = []
    for doc in corpus.docs:
        for section in doc.sections:
            for block in section.blocks:
                text = _block_text(block)
                if len(text) > 60:
                    paragraphs.append(text)
    return paragraphs, [doc.title for doc in corpus.docs]


def write_bulk(out: Path, target_bytes: int, seed: int = DEFAULT_SEED, file_bytes: int = 20_000) -> tuple[int, int]:
    """Write about ``target_bytes`` of documents for throughput and latency benchmarks:
    paragraphs of the structured corpus, shuffled, with every number redrawn, so no two
    chunks are the same; a third each .md, .txt and .html. Returns (files, bytes).

    Fast by design (string joins only): 100 MB takes seconds, not minutes."""
    rng = random.Random(seed)
    paragraphs, titles = _passages(seed)

    def renumber(text: str) -> str:
        return _NUMBER.sub(lambda m: str(rng.randint(1, 10 ** len(m.group()) - 1)), text)

    written = files = 0
    while written < target_bytes:
        title = f"{renumber(rng.choice(titles))} (copy {files + 1})"
        body: list[str] = []
        size = 0
        while size < file_bytes:
            text = renumber(rng.choice(paragraphs))
            body.append(text)
            size += len(text) + 2
        fmt = ("md", "txt", "html")[files % 3]
        if fmt == "html":
            inner = "\n".join(f"<p>{_esc(t)}</p>" for t in body)
            text = f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_esc(title)}</title></head>\n<body>\n<h1>{_esc(title)}</h1>\n{inner}\n</body></html>\n'
        elif fmt == "md":
            text = f"# {title}\n\n" + "\n\n".join(body) + "\n"
        else:
            text = f"{title}\n\n" + "\n\n".join(textwrap.fill(t, 76) for t in body) + "\n"
        data = text.encode("utf-8")
        target = out / f"{files // 500:03d}" / f"doc-{files:06d}.{fmt}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += len(data)
        files += 1
    return files, written


def load_questions(root: Path) -> list[dict[str, object]]:
    """questions.json of a corpus directory."""
    return list(json.loads((root / QUESTIONS_FILE).read_text(encoding="utf-8")))


def summary(written: Written) -> str:
    answerable = [q for q in written.questions if q["path"] is not None]
    styles: dict[str, int] = {}
    for q in written.questions:
        styles[str(q["style"])] = styles.get(str(q["style"]), 0) + 1
    fmts = ", ".join(f"{n} .{ext}" for ext, n in written.formats.items())
    style_text = ", ".join(f"{n} {s}" for s, n in styles.items())
    return (
        f"{written.documents} documents ({fmts}), {written.bytes / 1024:.0f} KiB in {written.root}\n"
        f"{len(written.questions)} questions: {len(answerable)} answerable, "
        f"{len(written.questions) - len(answerable)} unanswerable ({style_text})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="new or empty directory to write into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (default {DEFAULT_SEED})")
    args = parser.parse_args(argv)
    try:
        written = write_corpus(args.out, args.seed)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
