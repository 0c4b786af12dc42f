"""``reward:sentiment``: how positive a completion reads, by VADER's lexicon and rules."""

from __future__ import annotations

from workbench.objectives.rewards.packages import RewardPackage

VADER = RewardPackage("sentiment", module="vader", distribution="nltk-vader-sentiment")


class Sentiment:
    """VADER's compound score of the completion, in [-1, 1] (-1 most negative, 1 most positive).

    VADER (Hutto and Gilbert, 2014) sums the valences of the lexicon words it finds (each in
    [-4, 4], adjusted for negation, boosters such as "very", capitals, "but" and "!") into
    ``x`` and squashes it: ``compound = x / sqrt(x^2 + 15)``. A text with no sentiment word
    scores 0, so task answers made of digits and letters are neutral. The analyzer (from the
    package ``nltk-vader-sentiment``, lexicons bundled, pure Python) is built on first call.
    The example is not read: the score is the completion's alone.
    """

    def __init__(self) -> None:
        self._analyzer = None

    def missing(self) -> str | None:
        return VADER.missing()

    def __call__(self, completion: str, example: dict) -> float:
        if self._analyzer is None:
            self._analyzer = VADER.load().SentimentIntensityAnalyzer()
        return float(self._analyzer.polarity_scores(completion)["compound"])
