"""faceaudit: fairness audits of face-attribute classifiers by race, gender, age band and their intersections."""

__version__ = "0.1.0"
