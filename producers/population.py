"""Who lives in the simulated city and what they carry: people (residents, in-commuters,
visitors), their SIMs, which of those the simulated operator sees, and M2M devices.

Two tables. *Carriers* are things with a position: a person, a car (with a telematics unit) or
a meter. *Devices* are the simulated operator's subscriptions only (the ones whose events reach
crowdpulse); each belongs to one carrier. SIMs of other operators are never simulated, only
counted per person (`n_devices`), so the truth can say how many devices were really there.
Pure and deterministic: everything is drawn from the Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streams.core.errors import ConfigError
from streams.core.segments import encode as encode_segment

from .city import City
from .pseudonyms import pseudonymise

# Carrier kinds.
WORKER = 0  # resident with a job
RESIDENT = 1  # resident without one (retired, students, at home)
IN_COMMUTER = 2  # lives outside, works in the city (weekdays)
VISITOR = 3  # lives outside, comes for an event (scenario)
CAR = 4  # connected car: M2M, moves by car between places
METER = 5  # smart meter and other fixed M2M: never moves
KIND_NAMES = {WORKER: "worker", RESIDENT: "resident", IN_COMMUTER: "in-commuter", VISITOR: "visitor", CAR: "car", METER: "meter"}
PERSON_KINDS = (WORKER, RESIDENT, IN_COMMUTER, VISITOR)

PHONE, M2M = 0, 1  # wire device_class codes


@dataclass(frozen=True)
class PopulationParams:
    #: Subscriptions per person, all operators (the first SIM plus Poisson extras).
    sims_per_person: float = 1.35
    #: The simulated operator's market share, default and per area of the home cell (the first
    #: listed area that holds the home cell wins; areas missing from the areas file are ignored).
    market_share: float = 0.32
    market_share_by_area: tuple[tuple[str, float], ...] = (("east-district", 0.36), ("west-district", 0.28))
    #: The true share against the one above, which the operator believes (and the estimator
    #: uses): 1.2 draws 20% more of the operator's SIMs from the same people (robustness variants).
    share_scale: float = 1.0
    #: Share of residents with a job.
    worker_share: float = 0.55
    #: M2M devices, as a share of the operator's resident devices; of those, the share in cars.
    m2m_share: float = 0.08
    car_share_of_m2m: float = 0.3
    #: People who switch their phones off at night (detach at bedtime, attach in the morning).
    night_off_share: float = 0.06
    #: Age bands of the operator's subscribers (16-34, 35-64, 65+), as the edge knows them from
    #: the customer records; visitors (match-day supporters, shoppers) draw from the same mix.
    age_band_shares: tuple[float, float, float] = (0.33, 0.47, 0.20)


@dataclass
class Population:
    """Carriers (position holders) and the operator's devices, with the carrier -> devices CSR."""

    kind: np.ndarray  # int8, carrier kind
    home_xy: np.ndarray  # (n, 2) float64: home (residents), base (cars), position (meters)
    work_xy: np.ndarray  # (n, 2) float64: workplace (workers, in-commuters)
    home_cell: np.ndarray  # int32 cell index of home_xy, -1 for people from outside
    n_devices: np.ndarray  # int16, devices of all operators carried (people), 1 (M2M)
    train: np.ndarray  # bool: comes by train (in-commuters, visitors)
    night_off: np.ndarray  # bool: phones off at night
    # Devices of the simulated operator, sorted by carrier.
    carrier: np.ndarray  # int32
    device_class: np.ndarray  # uint8 (PHONE / M2M)
    segment: np.ndarray  # uint16 wire segment (streams/core/segments.py): home cell code | age band << 12
    pseudonym: np.ndarray  # V8
    device_ptr: np.ndarray = field(init=False)  # devices of carrier c: device_ptr[c]:device_ptr[c+1]

    def __post_init__(self) -> None:
        counts = np.bincount(self.carrier, minlength=len(self.kind))
        self.device_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def n_carriers(self) -> int:
        return len(self.kind)

    @property
    def n_visible(self) -> int:
        return len(self.carrier)

    @property
    def is_person(self) -> np.ndarray:
        return self.kind <= VISITOR

    @property
    def visible_per_carrier(self) -> np.ndarray:
        return np.diff(self.device_ptr)

    def devices_of(self, carriers: np.ndarray) -> np.ndarray:
        """Device indexes of the given carriers, concatenated (vectorised CSR expansion)."""
        starts = self.device_ptr[carriers]
        counts = self.device_ptr[1:][carriers] - starts  # (ends, without a carriers + 1 temporary)
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        # Device j of the output is starts[c] + (j - first output position of c): one repeat.
        return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)

    def subset(self, carriers: np.ndarray) -> Population:
        """The given carriers (sorted indexes) and their devices, as a population of their own
        (carrier and device indexes start at 0): one shard of a Simulation."""
        carriers = np.asarray(carriers, dtype=np.int64)
        devices = self.devices_of(carriers)
        return Population(
            kind=self.kind[carriers],
            home_xy=self.home_xy[carriers],
            work_xy=self.work_xy[carriers],
            home_cell=self.home_cell[carriers],
            n_devices=self.n_devices[carriers],
            train=self.train[carriers],
            night_off=self.night_off[carriers],
            carrier=np.repeat(np.arange(len(carriers), dtype=np.int32), self.visible_per_carrier[carriers]),
            device_class=self.device_class[devices],
            segment=self.segment[devices],
            pseudonym=self.pseudonym[devices],
        )

    def summary(self) -> dict[str, int]:
        people = int(self.is_person.sum())
        return {
            "people": people,
            **{f"{KIND_NAMES[k]}s": int((self.kind == k).sum()) for k in KIND_NAMES},
            "devices_all_operators": int(self.n_devices[self.is_person].sum()) + int((~self.is_person).sum()),
            "visible_devices": self.n_visible,
            "visible_phones": int((self.device_class == PHONE).sum()),
            "visible_m2m": int((self.device_class == M2M).sum()),
        }


def build_population(
    city: City,
    devices: int,
    rng: np.random.Generator,
    params: PopulationParams = PopulationParams(),
    in_commuters: float = 0.0,
    visitors: int = 0,
    train_share: float = 0.7,
    pseudonym_key: bytes = b"crowdpulse-demo-key",
) -> Population:
    """A population whose residents carry about `devices` of the operator's subscriptions.

    `devices` sizes the resident city: residents = operator phones / (SIMs per person x share),
    plus M2M. `in_commuters` (a share of residents) and `visitors` (a number) come on top.
    """
    if devices <= 0:
        raise ConfigError("devices must be positive")
    share = _share_by_cell(city, params)
    mean_share = float(share @ city.residential_weight)
    n_m2m = int(round(devices * params.m2m_share))
    n_residents = max(1, int(round((devices - n_m2m) / (params.sims_per_person * mean_share))))
    n_workers = int(round(n_residents * params.worker_share))
    n_in = int(round(n_residents * in_commuters))
    n_cars = int(round(n_m2m * params.car_share_of_m2m))
    n_meters = n_m2m - n_cars
    kind = np.concatenate(
        [
            np.full(n_workers, WORKER),
            np.full(n_residents - n_workers, RESIDENT),
            np.full(n_in, IN_COMMUTER),
            np.full(visitors, VISITOR),
            np.full(n_cars, CAR),
            np.full(n_meters, METER),
        ]
    ).astype(np.int8)
    n = len(kind)
    resident = (kind == WORKER) | (kind == RESIDENT) | (kind == CAR) | (kind == METER)
    home = np.full((n, 2), np.nan)
    home[resident] = city.sample_cells(city.residential_weight, int(resident.sum()), rng)
    work = np.full((n, 2), np.nan)
    commuting = (kind == WORKER) | (kind == IN_COMMUTER)
    work[commuting] = city.sample_cells(city.work_weight, int(commuting.sum()), rng)
    home_cell = np.full(n, -1, dtype=np.int32)
    home_cell[resident] = city.locate(home[resident])

    person = kind <= VISITOR
    n_devices = np.ones(n, dtype=np.int16)
    n_devices[person] = 1 + rng.poisson(params.sims_per_person - 1.0, size=int(person.sum()))
    # Each SIM of a person is the operator's with the market share of the home area.
    p_visible = np.where(home_cell >= 0, share[np.maximum(home_cell, 0)], params.market_share)
    if params.share_scale != 1.0:
        p_visible = np.clip(p_visible * params.share_scale, 0.0, 1.0)
    visible = np.zeros(n, dtype=np.int16)
    visible[person] = rng.binomial(n_devices[person], p_visible[person])
    visible[~person] = 1  # only the operator's M2M devices are simulated at all
    train = np.zeros(n, dtype=bool)
    outsiders = (kind == IN_COMMUTER) | (kind == VISITOR)
    train[outsiders] = rng.random(int(outsiders.sum())) < train_share
    night_off = person & (rng.random(n) < params.night_off_share)

    carrier = np.repeat(np.arange(n, dtype=np.int32), visible)
    device_class = np.where(person[carrier], PHONE, M2M).astype(np.uint8)
    shares = np.asarray(params.age_band_shares, dtype=float)
    age_band = np.where(person, 1 + rng.choice(3, size=n, p=shares / shares.sum()), 0)
    segment = encode_segment(home_cell[carrier], age_band[carrier])
    # Simulated IMSIs (MCC 001, MNC 01: the test network) turned into keyed pseudonyms.
    first = int(rng.integers(0, 10**9))
    imsi = 1_010_000_000_000_000 + first + np.arange(len(carrier), dtype=np.int64)
    return Population(
        kind=kind,
        home_xy=home,
        work_xy=work,
        home_cell=home_cell,
        n_devices=n_devices,
        train=train,
        night_off=night_off,
        carrier=carrier,
        device_class=device_class,
        segment=segment,
        pseudonym=pseudonymise(imsi, pseudonym_key),
    )


def _share_by_cell(city: City, params: PopulationParams) -> np.ndarray:
    share = np.full(city.n_cells, params.market_share)
    assigned = np.zeros(city.n_cells, dtype=bool)
    for area_id, value in params.market_share_by_area:
        if area_id not in city.areas.area_by_id:
            continue
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"market share of {area_id} must be in (0, 1]")
        cells = city.membership[:, city.area_index(area_id)] & ~assigned
        share[cells] = value
        assigned |= cells
    return share
