"""The ``nquant`` command line."""

import click

from nquant import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nquant")
def main():
    """nquant: quantize NumPy, Dask and Zarr arrays."""


@main.command()
@click.option("--rows", default=4096, show_default=True, help="Rows of the generated matrix.")
@click.option("--cols", default=1024, show_default=True, help="Columns of the generated matrix.")
def demo(rows, cols):
    """Quantize a generated matrix several ways and print bits/value, RMSE, SQNR and throughput."""
    from nquant.demo import run_demo

    run_demo(rows, cols, echo=click.echo)


if __name__ == "__main__":
    main()
