"""Event contracts of the referral platform: the only home of cross-service schemas."""

from .attribution import (
    AttributionGraceExpired,
    AttributionModel,
    ReferralAttributed,
    ReferralRejected,
    ReferralStatsCounted,
    RejectionReason,
)
from .base import EventData, catalogue, model_for, utcnow
from .codec import MAX_EVENT_BYTES, decode, encode, encode_new_event
from .deadletter import EventDeadLettered
from .envelope import Envelope, derived_id, new_event
from .errors import (
    EventError,
    InvalidEnvelope,
    InvalidEventData,
    MalformedEvent,
    UnknownEventType,
    UnsupportedSchemaVersion,
)
from .notifications import NotificationFailed, NotificationSent
from .registry import ProgramEntry, ReferralCodeEntry, code_key, program_key
from .rewards import (
    Beneficiary,
    FraudAction,
    FraudSignal,
    Recipient,
    RewardApproved,
    RewardEvent,
    RewardInReview,
    RewardKind,
    RewardPending,
    RewardPurpose,
    RewardRejected,
    RewardReversed,
)
from .topics import Topic, TopicRegistry
from .tracking import (
    ClickRecorded,
    CodeSource,
    ConversionRecorded,
    ConversionReversed,
    Customer,
    ReversalReason,
)

__all__ = [
    "MAX_EVENT_BYTES", "AttributionGraceExpired", "AttributionModel", "Beneficiary",
    "ClickRecorded", "CodeSource",
    "ConversionRecorded", "ConversionReversed", "Customer", "Envelope", "EventData",
    "EventDeadLettered", "EventError", "FraudAction", "FraudSignal", "InvalidEnvelope",
    "InvalidEventData", "MalformedEvent", "NotificationFailed", "NotificationSent",
    "ProgramEntry", "Recipient", "ReferralAttributed", "ReferralCodeEntry", "ReferralRejected",
    "ReferralStatsCounted",
    "RejectionReason", "ReversalReason", "RewardApproved", "RewardEvent", "RewardInReview",
    "RewardKind", "RewardPending", "RewardPurpose", "RewardRejected", "RewardReversed", "Topic",
    "TopicRegistry", "UnknownEventType", "UnsupportedSchemaVersion", "catalogue", "code_key",
    "decode", "derived_id", "encode", "encode_new_event", "model_for", "new_event", "program_key",
    "utcnow",
]
