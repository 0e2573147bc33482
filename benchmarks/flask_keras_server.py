"""Tutorial (d)'s web app, for the serving comparison: Flask + Keras, one ``model.predict`` per
request on an image decoded with OpenCV (BGR to RGB, resized, /255), served by Flask's
built-in threaded server as the tutorial runs it. Runs in ``benchmarks/.venv-keras``.

``POST /predict`` takes the image as the form field ``file`` (as ``medsight serve`` does);
``GET /health`` answers once the model is built.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from flask import Flask, jsonify, request

from benchmarks.keras_tutorials import TUTORIALS


def create_app(recipe: str) -> Flask:
    spec = TUTORIALS[recipe]
    model = spec.build(spec.size)  # the tutorial loads its trained model; same compute
    app = Flask(__name__)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/predict")
    def predict():
        data = np.frombuffer(request.files["file"].read(), np.uint8)
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (spec.size, spec.size))
        probs = model.predict(np.expand_dims(image / 255.0, 0), verbose=0)[0]
        return jsonify({"probabilities": [float(p) for p in probs]})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(TUTORIALS), default="covid-vgg16")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    create_app(args.recipe).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
