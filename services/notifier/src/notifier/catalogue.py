"""What each email says, per locale. Placeholders: {name} {program} {amount} {date} {reason}.

Kept as data (not gettext catalogues) because the set is small and reviewed as a whole; a
missing locale falls back to English, a missing key is a test failure.
"""

from __future__ import annotations

LOCALES = ("en", "nl", "da", "it")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "greeting": "Hi {name},",
        "greeting_anonymous": "Hi,",
        "referrer.pending.subject": "Your {program} referral converted: {amount} pending "
                                    "until {date}",
        "referrer.pending.body": "Good news: someone you referred to {program} just placed an "
                                 "order. Your reward of {amount} is pending until {date}; after "
                                 "that it becomes available to you.",
        "referrer.approved.subject": "Your {amount} referral reward from {program} is available",
        "referrer.approved.body": "Your reward of {amount} from {program} is now available.",
        "referrer.rejected.subject": "Your referral reward from {program} was not approved",
        "referrer.rejected.body": "We could not approve your reward of {amount}: {reason}.",
        "referrer.reversed.subject": "Your referral reward from {program} was reversed",
        "referrer.reversed.body": "Your reward of {amount} was reversed: {reason}.",
        "friend.pending.subject": "Welcome to {program}: your {amount} reward is pending "
                                  "until {date}",
        "friend.pending.body": "Thank you for joining {program} through a friend's referral. Your "
                               "reward of {amount} is pending until {date}.",
        "friend.approved.subject": "Your {amount} welcome reward from {program} is available",
        "friend.approved.body": "Your welcome reward of {amount} from {program} is now available.",
        "friend.rejected.subject": "Your welcome reward from {program} was not approved",
        "friend.rejected.body": "We could not approve your welcome reward of {amount}: {reason}.",
        "friend.reversed.subject": "Your welcome reward from {program} was reversed",
        "friend.reversed.body": "Your welcome reward of {amount} was reversed: {reason}.",
        "footer": "You receive this email because you take part in the referral programme of "
                  "{program}.",
        "points": "{count} points",
        "reason.min_order_amount": "the order was below the programme's minimum amount",
        "reason.cap_reached": "the programme's reward limit was reached",
        "reason.fraud": "our fraud checks flagged the referral",
        "reason.refund": "the order was refunded",
        "reason.chargeback": "the payment was charged back",
        "reason.cancellation": "the order was cancelled",
        "unsubscribe": 'Unsubscribe from these emails',
        "unsubscribe.confirm.title": 'Stop emails about your rewards from {program}?',
        "unsubscribe.confirm.body": 'You will still earn rewards; you just will not get these '
                                    'emails any more.',
        "unsubscribe.button": 'Unsubscribe',
        "unsubscribe.done.title": 'You are unsubscribed',
        "unsubscribe.done.body": 'You will get no more emails about your rewards from {program}.',
        "unsubscribe.invalid.title": 'This link does not work',
    },
    "nl": {
        "greeting": "Hallo {name},",
        "greeting_anonymous": "Hallo,",
        "referrer.pending.subject": "Je doorverwijzing bij {program} is omgezet: {amount} in "
                                    "afwachting tot {date}",
        "referrer.pending.body": "Goed nieuws: iemand die je naar {program} hebt doorverwezen, "
                                 "heeft zojuist een bestelling geplaatst. Je beloning van "
                                 "{amount} staat in afwachting tot {date}; daarna is ze voor je "
                                 "beschikbaar.",
        "referrer.approved.subject": "Je beloning van {amount} van {program} is beschikbaar",
        "referrer.approved.body": "Je beloning van {amount} van {program} is nu beschikbaar.",
        "referrer.rejected.subject": "Je beloning van {program} is niet goedgekeurd",
        "referrer.rejected.body": "We konden je beloning van {amount} niet goedkeuren: {reason}.",
        "referrer.reversed.subject": "Je beloning van {program} is teruggedraaid",
        "referrer.reversed.body": "Je beloning van {amount} is teruggedraaid: {reason}.",
        "friend.pending.subject": "Welkom bij {program}: je beloning van {amount} staat in "
                                  "afwachting tot {date}",
        "friend.pending.body": "Bedankt dat je via een vriend bij {program} bent gekomen. Je "
                               "beloning van {amount} staat in afwachting tot {date}.",
        "friend.approved.subject": "Je welkomstbeloning van {amount} van {program} is "
                                   "beschikbaar",
        "friend.approved.body": "Je welkomstbeloning van {amount} van {program} is nu beschikbaar.",
        "friend.rejected.subject": "Je welkomstbeloning van {program} is niet goedgekeurd",
        "friend.rejected.body": "We konden je welkomstbeloning van {amount} niet goedkeuren: "
                                "{reason}.",
        "friend.reversed.subject": "Je welkomstbeloning van {program} is teruggedraaid",
        "friend.reversed.body": "Je welkomstbeloning van {amount} is teruggedraaid: {reason}.",
        "footer": "Je ontvangt deze e-mail omdat je deelneemt aan het referralprogramma van "
                  "{program}.",
        "points": "{count} punten",
        "reason.min_order_amount": "de bestelling lag onder het minimumbedrag van het programma",
        "reason.cap_reached": "de beloningslimiet van het programma is bereikt",
        "reason.fraud": "onze fraudecontrole heeft de doorverwijzing gemarkeerd",
        "reason.refund": "de bestelling is terugbetaald",
        "reason.chargeback": "de betaling is teruggeboekt",
        "reason.cancellation": "de bestelling is geannuleerd",
        "unsubscribe": 'Afmelden voor deze e-mails',
        "unsubscribe.confirm.title": 'Geen e-mails meer over je beloningen van {program}?',
        "unsubscribe.confirm.body": 'Je verdient nog steeds beloningen; je krijgt alleen deze '
                                    'e-mails niet meer.',
        "unsubscribe.button": 'Afmelden',
        "unsubscribe.done.title": 'Je bent afgemeld',
        "unsubscribe.done.body": 'Je krijgt geen e-mails meer over je beloningen van {program}.',
        "unsubscribe.invalid.title": 'Deze link werkt niet',
    },
    "da": {
        "greeting": "Hej {name},",
        "greeting_anonymous": "Hej,",
        "referrer.pending.subject": "Din henvisning til {program} er blevet til et køb: {amount} "
                                    "afventer indtil {date}",
        "referrer.pending.body": "Gode nyheder: en person, du har henvist til {program}, har lige "
                                 "afgivet en ordre. Din belønning på {amount} afventer indtil "
                                 "{date}; derefter er den tilgængelig for dig.",
        "referrer.approved.subject": "Din belønning på {amount} fra {program} er tilgængelig",
        "referrer.approved.body": "Din belønning på {amount} fra {program} er nu tilgængelig.",
        "referrer.rejected.subject": "Din belønning fra {program} blev ikke godkendt",
        "referrer.rejected.body": "Vi kunne ikke godkende din belønning på {amount}: {reason}.",
        "referrer.reversed.subject": "Din belønning fra {program} er blevet tilbageført",
        "referrer.reversed.body": "Din belønning på {amount} er blevet tilbageført: {reason}.",
        "friend.pending.subject": "Velkommen til {program}: din belønning på {amount} afventer "
                                  "indtil {date}",
        "friend.pending.body": "Tak, fordi du kom til {program} via en vens henvisning. Din "
                               "belønning på {amount} afventer indtil {date}.",
        "friend.approved.subject": "Din velkomstbelønning på {amount} fra {program} er "
                                   "tilgængelig",
        "friend.approved.body": "Din velkomstbelønning på {amount} fra {program} er nu "
                                "tilgængelig.",
        "friend.rejected.subject": "Din velkomstbelønning fra {program} blev ikke godkendt",
        "friend.rejected.body": "Vi kunne ikke godkende din velkomstbelønning på {amount}: "
                                "{reason}.",
        "friend.reversed.subject": "Din velkomstbelønning fra {program} er blevet tilbageført",
        "friend.reversed.body": "Din velkomstbelønning på {amount} er blevet tilbageført: "
                                "{reason}.",
        "footer": "Du modtager denne e-mail, fordi du deltager i henvisningsprogrammet hos "
                  "{program}.",
        "points": "{count} point",
        "reason.min_order_amount": "ordren var under programmets minimumsbeløb",
        "reason.cap_reached": "programmets grænse for belønninger er nået",
        "reason.fraud": "vores svindelkontrol markerede henvisningen",
        "reason.refund": "ordren blev refunderet",
        "reason.chargeback": "betalingen blev tilbageført",
        "reason.cancellation": "ordren blev annulleret",
        "unsubscribe": 'Afmeld disse e-mails',
        "unsubscribe.confirm.title": 'Stop e-mails om dine belønninger fra {program}?',
        "unsubscribe.confirm.body": 'Du optjener stadig belønninger; du får bare ikke disse '
                                    'e-mails mere.',
        "unsubscribe.button": 'Afmeld',
        "unsubscribe.done.title": 'Du er afmeldt',
        "unsubscribe.done.body": 'Du får ikke flere e-mails om dine belønninger fra {program}.',
        "unsubscribe.invalid.title": 'Dette link virker ikke',
    },
    "it": {
        "greeting": "Ciao {name},",
        "greeting_anonymous": "Ciao,",
        "referrer.pending.subject": "Il tuo invito su {program} si è convertito: {amount} in "
                                    "attesa fino al {date}",
        "referrer.pending.body": "Buone notizie: una persona che hai invitato su {program} ha "
                                 "appena effettuato un ordine. Il tuo premio di {amount} è in "
                                 "attesa fino al {date}; dopo sarà disponibile per te.",
        "referrer.approved.subject": "Il tuo premio di {amount} da {program} è disponibile",
        "referrer.approved.body": "Il tuo premio di {amount} da {program} è ora disponibile.",
        "referrer.rejected.subject": "Il tuo premio da {program} non è stato approvato",
        "referrer.rejected.body": "Non abbiamo potuto approvare il tuo premio di {amount}: "
                                  "{reason}.",
        "referrer.reversed.subject": "Il tuo premio da {program} è stato annullato",
        "referrer.reversed.body": "Il tuo premio di {amount} è stato annullato: {reason}.",
        "friend.pending.subject": "Benvenuto su {program}: il tuo premio di {amount} è in attesa "
                                  "fino al {date}",
        "friend.pending.body": "Grazie per esserti unito a {program} tramite l'invito di un "
                               "amico. Il tuo premio di {amount} è in attesa fino al {date}.",
        "friend.approved.subject": "Il tuo premio di benvenuto di {amount} da {program} è "
                                   "disponibile",
        "friend.approved.body": "Il tuo premio di benvenuto di {amount} da {program} è ora "
                                "disponibile.",
        "friend.rejected.subject": "Il tuo premio di benvenuto da {program} non è stato approvato",
        "friend.rejected.body": "Non abbiamo potuto approvare il tuo premio di benvenuto di "
                                "{amount}: {reason}.",
        "friend.reversed.subject": "Il tuo premio di benvenuto da {program} è stato annullato",
        "friend.reversed.body": "Il tuo premio di benvenuto di {amount} è stato annullato: "
                                "{reason}.",
        "footer": "Ricevi questa email perché partecipi al programma di inviti di {program}.",
        "points": "{count} punti",
        "reason.min_order_amount": "l'ordine era inferiore all'importo minimo del programma",
        "reason.cap_reached": "è stato raggiunto il limite di premi del programma",
        "reason.fraud": "i nostri controlli antifrode hanno segnalato l'invito",
        "reason.refund": "l'ordine è stato rimborsato",
        "reason.chargeback": "il pagamento è stato stornato",
        "reason.cancellation": "l'ordine è stato annullato",
        "unsubscribe": "Annulla l'iscrizione a queste email",
        "unsubscribe.confirm.title": 'Non ricevere più email sui tuoi premi da {program}?',
        "unsubscribe.confirm.body": 'Continuerai a guadagnare premi; semplicemente non riceverai '
                                    'più queste email.',
        "unsubscribe.button": "Annulla l'iscrizione",
        "unsubscribe.done.title": 'Iscrizione annullata',
        "unsubscribe.done.body": 'Non riceverai più email sui tuoi premi da {program}.',
        "unsubscribe.invalid.title": 'Questo link non funziona',
    },
}


# Milestone and digest texts.
_MORE: dict[str, dict[str, str]] = {
    "en": {
        "referrer.milestone.subject": 'You reached {count} successful referrals at {program}: '
                                      '{amount} bonus',
        "referrer.milestone.body": 'Congratulations: {count} people you referred to {program} '
                                   'became customers. As a thank-you you earn a bonus of '
                                   '{amount}, pending until {date}.',
        "digest.subject": '{program} referrals {period}: {attributed} referred orders, {revenue}',
        "digest.intro": 'Here is how the referral programme of {program} did {period}.',
        "digest.period.daily": 'on {date}',
        "digest.period.weekly": 'in the week of {date}',
        "digest.clicks": 'Clicks',
        "digest.conversions": 'Conversions',
        "digest.attributed": 'Referred orders',
        "digest.conversion_rate": 'Conversion rate',
        "digest.revenue": 'Referred revenue',
        "digest.reward_cost": 'Reward cost',
        "digest.roi": 'ROI',
        "digest.in_review": 'Rewards waiting for review',
        "digest.top_channel": 'Best channel',
        "digest.dashboard": 'Open the dashboard',
        "digest.footer": 'You receive this digest as a marketer of {program}.',
        "digest.none": 'none',
    },
    "nl": {
        "referrer.milestone.subject": 'Je hebt {count} geslaagde doorverwijzingen bij {program}: '
                                      '{amount} bonus',
        "referrer.milestone.body": 'Gefeliciteerd: {count} mensen die je naar {program} hebt '
                                   'doorverwezen, zijn klant geworden. Als bedankje krijg je een '
                                   'bonus van {amount}, in afwachting tot {date}.',
        "digest.subject": 'Doorverwijzingen {program} {period}: {attributed} doorverwezen '
                          'bestellingen, {revenue}',
        "digest.intro": 'Zo deed het referralprogramma van {program} het {period}.',
        "digest.period.daily": 'op {date}',
        "digest.period.weekly": 'in de week van {date}',
        "digest.clicks": 'Klikken',
        "digest.conversions": 'Conversies',
        "digest.attributed": 'Doorverwezen bestellingen',
        "digest.conversion_rate": 'Conversiepercentage',
        "digest.revenue": 'Omzet via doorverwijzingen',
        "digest.reward_cost": 'Kosten van beloningen',
        "digest.roi": 'ROI',
        "digest.in_review": 'Beloningen die op beoordeling wachten',
        "digest.top_channel": 'Beste kanaal',
        "digest.dashboard": 'Open het dashboard',
        "digest.footer": 'Je ontvangt dit overzicht als marketeer van {program}.',
        "digest.none": 'geen',
    },
    "da": {
        "referrer.milestone.subject": 'Du har nået {count} vellykkede henvisninger hos {program}: '
                                      '{amount} i bonus',
        "referrer.milestone.body": 'Tillykke: {count} personer, du har henvist til {program}, er '
                                   'blevet kunder. Som tak får du en bonus på {amount}, som '
                                   'afventer indtil {date}.',
        "digest.subject": 'Henvisninger hos {program} {period}: {attributed} henviste ordrer, '
                          '{revenue}',
        "digest.intro": 'Sådan gik henvisningsprogrammet hos {program} {period}.',
        "digest.period.daily": 'den {date}',
        "digest.period.weekly": 'i ugen fra {date}',
        "digest.clicks": 'Klik',
        "digest.conversions": 'Konverteringer',
        "digest.attributed": 'Henviste ordrer',
        "digest.conversion_rate": 'Konverteringsrate',
        "digest.revenue": 'Omsætning fra henvisninger',
        "digest.reward_cost": 'Omkostninger til belønninger',
        "digest.roi": 'ROI',
        "digest.in_review": 'Belønninger, der venter på gennemsyn',
        "digest.top_channel": 'Bedste kanal',
        "digest.dashboard": 'Åbn dashboardet',
        "digest.footer": 'Du modtager denne oversigt som marketingansvarlig for {program}.',
        "digest.none": 'ingen',
    },
    "it": {
        "referrer.milestone.subject": 'Hai raggiunto {count} inviti riusciti su {program}: bonus '
                                      'di {amount}',
        "referrer.milestone.body": 'Complimenti: {count} persone che hai invitato su {program} '
                                   'sono diventate clienti. Come ringraziamento ricevi un bonus '
                                   'di {amount}, in attesa fino al {date}.',
        "digest.subject": 'Inviti {program} {period}: {attributed} ordini da inviti, {revenue}',
        "digest.intro": 'Ecco come è andato il programma di inviti di {program} {period}.',
        "digest.period.daily": 'il {date}',
        "digest.period.weekly": 'nella settimana del {date}',
        "digest.clicks": 'Clic',
        "digest.conversions": 'Conversioni',
        "digest.attributed": 'Ordini da inviti',
        "digest.conversion_rate": 'Tasso di conversione',
        "digest.revenue": 'Ricavi da inviti',
        "digest.reward_cost": 'Costo dei premi',
        "digest.roi": 'ROI',
        "digest.in_review": 'Premi in attesa di revisione',
        "digest.top_channel": 'Canale migliore',
        "digest.dashboard": 'Apri la dashboard',
        "digest.footer": 'Ricevi questo riepilogo come marketer di {program}.',
        "digest.none": 'nessuno',
    },
}
for _locale, _texts in _MORE.items():
    MESSAGES[_locale].update(_texts)
