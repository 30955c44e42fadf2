"""Datasets: MNIST, CIFAR-10 and image folders, each with an offline path that says what it used."""
