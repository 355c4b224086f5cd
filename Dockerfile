# The crowdpulse image used by docker-compose.yml (workers and simulator).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY producers ./producers
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 6066
CMD ["crowdpulse", "worker"]
