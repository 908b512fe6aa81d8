from zope.interface.interface import InterfaceClass

IRootFactory: InterfaceClass
ISecurityPolicy: InterfaceClass
