"""The access log without query strings: a search's words are a person's memory, and a log file
is neither erased by forget_memory nor as private as their own log."""

import logging

__all__ = ["drop_query_strings"]


class _WithoutQueryString(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access records carry (client, method, path with query, http version, status).
        if isinstance(record.args, tuple) and len(record.args) == 5 and isinstance(record.args[2], str):
            client, method, path, version, status = record.args
            record.args = (client, method, path.split("?", 1)[0], version, status)
        return True


def drop_query_strings(logger_name: str = "uvicorn.access") -> None:
    logging.getLogger(logger_name).addFilter(_WithoutQueryString())
