# What ``class IFoo(Interface)`` makes: an object, not a Python type.
class InterfaceClass:
    __name__: str
